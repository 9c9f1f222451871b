"""The opt-in fast embedding path: a static token table distilled from a sentence-transformer.

Model2vec's method, reimplemented here in a few lines (its ``distill`` extra pins an older
transformers):

1. Every token of the model's WordPiece vocabulary (special and ``[unused]`` tokens aside) goes
   through the transformer alone, between its start and end tokens, in both orders
   (``[CLS] t [SEP]`` and ``[SEP] t [CLS]``); the outputs are mean-pooled as the
   sentence-transformer pools. Averaging the two orders measured better than either alone:
   ``[CLS]`` first suits short news snippets, ``[SEP]`` first (model2vec's choice) arXiv abstracts.
2. PCA to :data:`PCA_DIMS` dimensions. Centring is what matters: raw token vectors share one
   large common direction that puts nearly every pair of texts within the default duplicate
   cutoff (cosine distance 0.1). 256 dimensions clustered as well as 384 (within k-means noise)
   at two thirds of the size; 128 flagged more false duplicates.
3. SIF weighting with frequencies estimated by Zipf's law from the vocabulary order (WordPiece
   vocabularies list frequent tokens first): the ``r``-th kept token weighs ``a / (a + p_r)``
   with ``p_r`` proportional to ``1 / (r + 1)`` and ``a = 1e-4``, so frequent tokens count for
   less. It clustered better than no weighting and than model2vec's earlier ``log(r)`` weights.

A text's vector is then the normalised sum (so the mean's direction) of the rows of its first
:data:`MAX_TOKENS` tokens: a sparse matrix product, no model, no torch. A text without a known
token gets the distilled vector of the empty text. The table and the tokenizer are stored in one
file per source model under the store (:func:`atlas_assets.store.cache.build_once`), so
distillation runs once per store.

This module builds on :mod:`atlas_assets.lib.models` only; :mod:`atlas_assets.lib.embed`
(``mode="static"``) is its one caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from threading import Lock

import numpy as np

from atlas_assets.lib.models import Progress, load_model, normalize, transformer_key
from atlas_assets.options import DEFAULT_MODEL
from atlas_assets.store.cache import build_once, static_model_path, write_arrays

# Bump when the distillation changes: the table file and the embedding cache are keyed by it.
METHOD_VERSION = 1
PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
# The transformer reads 256 tokens; here extra tokens cost next to nothing, and 512 clustered
# arXiv abstracts no worse (a little better) than 256.
MAX_TOKENS = 512
_UNUSED = re.compile(r"^\[unused\d+\]$")
_ENCODE_CHUNK = 10_000  # texts per tokenizer call: bounds the memory of the token lists


class StaticModel:
    """A static embedding model: one row per token id, plus the empty text's vector last."""

    def __init__(self, table: np.ndarray, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer_json = tokenizer_json
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # Rows left at zero (special, unused or beyond a vocabulary limit) are not tokens we know.
        self._known = np.any(self.table[:-1] != 0, axis=1)

    @property
    def dim(self) -> int:
        """Dimensions of the vectors."""
        return int(self.table.shape[1])

    def _token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated known token ids of ``texts`` and the text each belongs to."""
        tok = self._tokenizer
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # fast: skips offsets
        ids = [e.ids[:MAX_TOKENS] for e in encode(list(texts), add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter((i for row in ids for i in row), np.int64, int(lengths.sum()))
        rows = np.repeat(np.arange(len(ids)), lengths)
        keep = flat < len(self._known)
        keep[keep] = self._known[flat[keep]]
        return flat[keep], rows[keep]

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """Unit float32 vectors ``(N, dim)`` of ``texts``, in order.

        ``progress(done, total)`` is called after each chunk of texts.
        """
        from scipy import sparse

        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = texts[start : start + _ENCODE_CHUNK]
            flat, rows = self._token_ids(chunk)
            # Token counts per text as a sparse matrix: one product sums every text's rows.
            counts = sparse.csr_matrix(
                (np.ones(len(flat), np.float32), (rows, flat)),
                shape=(len(chunk), self.table.shape[0]),
            )
            vectors = np.asarray(counts @ self.table, dtype=np.float32)
            vectors[np.bincount(rows, minlength=len(chunk)) == 0] = self.table[-1]
            out[start : start + len(chunk)] = vectors
            if progress:
                progress(start + len(chunk), len(texts))
        return normalize(out)


def static_key(model: str = DEFAULT_MODEL) -> str:
    """The name of ``model``'s static table, and of the cache of its static vectors."""
    return f"{transformer_key(model)}-static{METHOD_VERSION}"


def _forward_means(net, ids: np.ndarray) -> np.ndarray:
    """Mean of the transformer's last hidden states over every position of each row of ``ids``."""
    import torch

    batch = torch.as_tensor(ids)
    with torch.inference_mode():
        hidden = net(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
    return hidden.mean(dim=1).float().numpy()


def distill(
    model: str = DEFAULT_MODEL,
    *,
    dims: int = PCA_DIMS,
    vocab_limit: int | None = None,
    batch_size: int = 1024,
    progress: Progress | None = None,
) -> StaticModel:
    """Distil a static model from sentence-transformers ``model`` (see the module docstring).

    ``vocab_limit`` distils only the first token ids (for tests: every other token is then
    unknown). ``progress(done, total)`` counts forward passes of tokens, two per token.
    """
    transformer = load_model(model)[0]
    hf_tokenizer, net = transformer.tokenizer, transformer.auto_model.eval()
    vocab = hf_tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    skip = set(hf_tokenizer.all_special_ids)
    ids = np.array(
        sorted(
            i
            for t, i in vocab.items()
            if i not in skip and not _UNUSED.match(t) and (vocab_limit is None or i < vocab_limit)
        ),
        np.int64,
    )
    if len(ids) <= dims:
        raise ValueError(f"{len(ids)} tokens cannot make {dims} PCA dimensions")
    # The tokenizer's own start and end tokens ([CLS], [SEP] for BERT), whatever the model.
    framed = hf_tokenizer("a")["input_ids"]
    start, end = framed[0], framed[-1]

    raw = np.zeros((len(ids), net.config.hidden_size), np.float64)
    done = 0
    for first, last in ((start, end), (end, start)):
        for lo in range(0, len(ids), batch_size):
            chunk = ids[lo : lo + batch_size]
            framed_ids = np.stack([np.full_like(chunk, first), chunk, np.full_like(chunk, last)], 1)
            raw[lo : lo + len(chunk)] += _forward_means(net, framed_ids) / 2
            done += len(chunk)
            if progress:
                progress(done, 2 * len(ids))
    empty = _forward_means(net, np.array([[start, end]], np.int64))[0]

    # PCA by eigendecomposition of the covariance (d x d: a few milliseconds).
    mean = raw.mean(axis=0)
    centred = raw - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    components = eigenvectors[:, np.argsort(eigenvalues)[::-1][:dims]]
    rank = np.arange(1, len(ids) + 1)
    zipf = 1.0 / (rank + 1)
    weights = SIF_COEFFICIENT / (SIF_COEFFICIENT + zipf / zipf.sum())

    table = np.zeros((size + 1, dims), np.float32)
    table[ids] = (centred @ components) * weights[:, None]
    table[-1] = (empty - mean) @ components
    return StaticModel(table, hf_tokenizer.backend_tokenizer.to_str())


def save(static: StaticModel, path: Path, *, source: str) -> None:
    """Write a static model to ``path`` (one ``.npz`` file), atomically."""
    meta = {"source": source, "method_version": METHOD_VERSION, "dims": static.dim}
    write_arrays(
        path,
        table=static.table,
        tokenizer=np.array(static.tokenizer_json),
        meta=np.array(json.dumps(meta)),
    )


def load(path: Path) -> StaticModel:
    """Read a static model written by :func:`save`."""
    with np.load(path) as stored:
        return StaticModel(stored["table"], str(stored["tokenizer"]))


def model_file(
    model: str = DEFAULT_MODEL, *, home: Path | None = None, vocab_limit: int | None = None
) -> Path:
    """Where the static model of ``model`` is kept in the store at ``home``. A ``vocab_limit``
    (for tests) is part of the name, so a partial table never stands in for the full one."""
    key = static_key(model) + (f"-vocab{vocab_limit}" if vocab_limit is not None else "")
    return static_model_path(key, home)


_LOADED: dict[Path, StaticModel] = {}
_LOADING = Lock()


def load_static_model(
    model: str = DEFAULT_MODEL,
    *,
    home: Path | None = None,
    vocab_limit: int | None = None,
    progress: Progress | None = None,
) -> StaticModel:
    """The static model of ``model``: from memory, else from the store, else distilled now.

    Distillation (about a minute for MiniLM on two cores) runs once per store: the result is
    written under ``home`` (default ``$ATLAS_HOME``), and a file lock makes concurrent runs wait
    for the first instead of distilling again. ``vocab_limit``: see :func:`model_file`.
    """
    path = model_file(model, home=home, vocab_limit=vocab_limit)
    with _LOADING:
        if path not in _LOADED:

            def make() -> None:
                save(distill(model, vocab_limit=vocab_limit, progress=progress), path, source=model)

            build_once(path, make)
            _LOADED[path] = load(path)
        return _LOADED[path]
