"""Runs of equal keys in sorted numpy columns: what the windowed steps reduce with `reduceat`."""

from __future__ import annotations

import numpy as np


def last_of_runs(*keys: np.ndarray) -> np.ndarray:
    """For rows sorted by `keys`, True at the last row of each run of equal keys."""
    if not len(keys[0]):
        return np.zeros(0, dtype=bool)
    changes = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        changes |= key[1:] != key[:-1]
    return np.r_[changes, True]


def run_bounds(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by `keys`, the first and the last row of each run of equal keys."""
    last = np.flatnonzero(last_of_runs(*keys))
    return np.r_[0, last[:-1] + 1][: len(last)], last
