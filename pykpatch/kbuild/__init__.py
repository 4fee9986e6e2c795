"""The kernel's build system as pykpatch uses it: one layer for everything that runs make or reads a tree.

- ``make``   the one make runner: environment policy, log, progress, stopping and waiting
"""
