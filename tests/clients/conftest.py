"""The fixtures of the service fakes live in tests/conftest.py: the pipeline tests use them too."""
