"""The kNN graph as a plain data type, apart from the numba code that builds it, so that loading
the Dagster definitions (every UI reload, every sensor tick) imports no numba or scipy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KnnGraph:
    """Each row's ``k`` nearest other rows, nearest first.

    ``indices`` is ``(N, k)`` int64 (never the row itself; ``-1`` pads when fewer than ``k``
    neighbours exist) and ``distances`` the matching ``(N, k)`` float32 cosine distances.
    """

    indices: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])
