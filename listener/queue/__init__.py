"""The queue: claims rows, runs their attempts, ends them, rescues the dead. It imports no stage.

store    every query on the builder's database (typed methods over sql/*.sql)
states   the state machine: statuses, kinds, outcomes; the live and the dead endings
hooks    how stages plug in: handlers, and hooks on rejected / dead attempt / approval buttons
listen   the LISTEN loop; workers: the worker threads; finish: the live ending, applied;
rescue   the dead ending, applied; registry: the listener registry; context, records, outcome:
         what a handler gets, and what it returns or raises
"""
