"""Small stand-ins for the outside services that speak their real wire protocols.

They run as real servers on 127.0.0.1 (or, for `claude`, as a real executable), so the clients
under test go through their ordinary network and process code paths.
"""
