"""Collectors: read the actual state of one target from AWS into immutable snapshots.

All AWS I/O of the daemon happens here (through daemon.aws), and nowhere in controls.
"""
