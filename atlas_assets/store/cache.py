"""What the embedding stage keeps between runs: the embedding cache, vectors keyed by (model,
text hash) in append-only Arrow shards, and the static models distilled from a transformer.

Each run that embeds new texts adds one file, so concurrent runs never rewrite each other's work
(on a remote store: one immutable object, fetched once by every machine that needs it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas_assets.store.files import (
    atomic_path,
    fixed_list,
    locked,
    matrix,
    read_arrow,
    write_arrow,
)
from atlas_assets.store.layout import static_model_path

__all__ = ["EmbeddingCache", "build_once", "static_model_path", "write_arrays"]
from atlas_assets.store.remote import listing


class EmbeddingCache:
    """Vectors of one model, looked up by text hashes (hex strings)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(found mask, vectors)`` for ``hashes`` (vectors None if nothing was found)."""
        found = np.zeros(len(hashes), bool)
        vectors: np.ndarray | None = None
        for f in self.files():
            table = read_arrow(f)  # fetched once from a remote store
            # Hashes are unique within a file (add() receives unique ones).
            position = pd.Index(table.column("hash").to_pylist()).get_indexer(hashes)
            hit = (position >= 0) & ~found
            if not hit.any():
                continue
            stored = matrix(table.column("vector"))
            if vectors is None:
                vectors = np.zeros((len(hashes), stored.shape[1]), np.float32)
            vectors[hit] = stored[position[hit]]
            found |= hit
        return found, vectors

    def files(self) -> list[Path]:
        """The cache's shards (on a remote store: those its listing names)."""
        names = listing(self.directory)
        if names is not None:
            return [self.directory / n for n in names if n.endswith(".arrow")]
        return sorted(self.directory.glob("*.arrow"))

    def add(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        """Store vectors of new, unique hashes (one new file)."""
        if len(hashes) == 0:
            return
        table = pa.table(
            {
                "hash": pa.array(hashes.tolist(), pa.string()),
                "vector": fixed_list(np.asarray(vectors, np.float32)),
            }
        )
        write_arrow(self.directory / f"{uuid.uuid4().hex}.arrow", table)


def write_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write named arrays to one ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def build_once(path: Path, build: Callable[[], None]) -> None:
    """Run ``build`` (which writes ``path``) unless ``path`` exists: once per store, since a
    file lock beside ``path`` makes concurrent processes wait for the first builder (of this
    machine: each machine keeps its own, see README Shared store)."""
    with locked(path.with_suffix(".lock"), machine_only=True):
        if not path.exists():
            build()
