"""How many worker processes scoring starts by default (no torch here: the command line's help reads it)."""

from __future__ import annotations

import os

MAX_DEFAULT_WORKERS = 8


def default_num_workers() -> int:
    """Worker processes by default: the CPUs this process may use, at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, cpus)


__all__ = ["MAX_DEFAULT_WORKERS", "default_num_workers"]
