"""The queue: claims rows, runs their attempts, ends them, rescues the dead. It imports no stage.

store     every query on the builder's database (typed methods over sql/*.sql)
states    the state machine: statuses, kinds, outcomes; the live and the dead endings
hooks     how stages plug in: handlers, and hooks on rejected / dead attempt / approval buttons / review link
services  the one service shape (start, stop, join), the service group, the one reconnect helper
listen    the LISTEN loop; dispatch: one claimer at a time, on the free worker's connection;
workers   the worker threads; finish: the live ending, applied; rescue: the dead ending, applied;
leader    the elected leader that runs the rescuer and the sweeps; registry: the listener registry;
context, records, outcome: what a handler gets, and what it returns or raises
"""
