"""The embedding cache in front of a model: only distinct texts it lacks are embedded."""

from __future__ import annotations

import numpy as np

from atlas_assets.lib.embed import embed_missing
from atlas_assets.store.cache import EmbeddingCache


def test_embed_missing_embeds_each_new_text_once_and_caches_it(tmp_path) -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], np.float32)

    cache = EmbeddingCache(tmp_path / "cache")
    vectors, embedded, cached = embed_missing(["bb", "a", "bb", "ccc"], cache, encode)
    assert sorted(calls[0]) == ["a", "bb", "ccc"] and (embedded, cached) == (3, 0)
    expected = np.array([[2, 98], [1, 97], [2, 98], [3, 99]], np.float32)
    np.testing.assert_array_equal(vectors, expected)

    vectors, embedded, cached = embed_missing(["ccc", "dd", "a"], cache, encode)
    assert calls[1] == ["dd"] and (embedded, cached) == (1, 2)
    np.testing.assert_array_equal(vectors, [[3, 99], [2, 100], [1, 97]])

    again, embedded, cached = embed_missing(["a", "dd"], EmbeddingCache(tmp_path / "cache"), encode)
    assert len(calls) == 2 and (embedded, cached) == (0, 2)  # a new process reads the files
    np.testing.assert_array_equal(again, [[1, 97], [2, 100]])
