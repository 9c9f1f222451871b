"""The static (distilled) embedding model: its vectors, its file in the store, its option.

A model distilled over the first token ids only (the ``static_model`` fixture) keeps these
tests fast; the full distillation is exercised by ``python -m benchmarks.embed``.
"""

from __future__ import annotations

import numpy as np
import pytest

from atlas_assets.lib import static_embed
from atlas_assets.lib.embed import embed_texts, model_key
from atlas_assets.options import NomicEmbedOptions, coerce_options
from atlas_assets_tests.conftest import STATIC_VOCAB

SPORT = "the team won the game last night"
SPORT_TOO = "last night our team won the big game"
POLITICS = "the government said the new law would change the state"


def test_vectors_are_unit_float32_of_the_table_width(static_model):
    texts = [SPORT, POLITICS, "", "\u2603\u2603"]  # empty, and no known token at all
    vectors = static_model.encode(texts)
    assert vectors.shape == (4, static_embed.PCA_DIMS) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # A text without known tokens gets the empty text's vector, never a zero vector.
    np.testing.assert_array_equal(vectors[2], vectors[3])


def test_identical_texts_get_identical_vectors_whatever_their_company(static_model):
    together = static_model.encode([SPORT, POLITICS, SPORT])
    np.testing.assert_array_equal(together[0], together[2])
    np.testing.assert_allclose(static_model.encode([SPORT])[0], together[0], rtol=1e-6)


def test_similar_texts_are_closer_than_unrelated_ones(static_model):
    ids = static_model._tokenizer.encode(SPORT + " " + SPORT_TOO + " " + POLITICS).ids
    assert max(ids) < STATIC_VOCAB  # every word is distilled, so the comparison is fair
    sport, sport_too, politics = static_model.encode([SPORT, SPORT_TOO, POLITICS])
    assert sport @ sport_too > sport @ politics + 0.1


def test_distilled_once_then_read_from_the_store(tmp_path, monkeypatch, static_model):
    calls = []

    def fake_distill(model, **kwargs):
        calls.append(model)
        return static_model

    monkeypatch.setattr(static_embed, "distill", fake_distill)
    monkeypatch.setattr(static_embed, "_LOADED", {})
    first = static_embed.load_static_model(home=tmp_path, vocab_limit=STATIC_VOCAB)
    path = static_embed.model_file(home=tmp_path, vocab_limit=STATIC_VOCAB)
    assert path != static_embed.model_file(home=tmp_path)
    assert calls == ["all-MiniLM-L6-v2"] and path.is_file()

    monkeypatch.setattr(static_embed, "_LOADED", {})  # a new process: only the file is left
    second = static_embed.load_static_model(home=tmp_path, vocab_limit=STATIC_VOCAB)
    assert len(calls) == 1 and second is not first
    np.testing.assert_array_equal(second.encode([SPORT]), first.encode([SPORT]))
    # The partial table of a test never stands in for the full one.
    assert not static_embed.model_file(home=tmp_path).exists()


def test_embed_texts_in_static_mode_reads_the_store(tmp_path, monkeypatch, static_model):
    monkeypatch.setattr(static_embed, "_LOADED", {})
    static_embed.save(static_model, static_embed.model_file(home=tmp_path), source="test")
    vectors = embed_texts([SPORT, POLITICS], mode="static", home=tmp_path)
    np.testing.assert_allclose(vectors, static_model.encode([SPORT, POLITICS]), rtol=1e-6)


def test_the_mode_is_validated_and_keys_the_cache():
    assert NomicEmbedOptions().mode == "transformer"
    assert NomicEmbedOptions(mode="static").mode == "static"
    with pytest.raises(ValueError, match="mode"):
        coerce_options(NomicEmbedOptions, {"mode": "fast"}, argument="embedding_model")
    with pytest.raises(ValueError, match="'transformer' or 'static'"):
        embed_texts(["x"], mode="fast")
    assert model_key(mode="static") != model_key() == model_key(mode="transformer")
    assert model_key(mode="static").startswith(model_key())


def test_the_static_path_never_imports_the_front_door():
    """Imports go one way, embed -> static_embed -> models: in a fresh interpreter, loading
    static_embed and naming a static model leaves lib.embed unimported."""
    import subprocess
    import sys

    code = (
        "import sys, atlas_assets.lib.static_embed as s; s.static_key(); s.model_file(); "
        "assert 'atlas_assets.lib.embed' not in sys.modules, 'static_embed imports lib.embed'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
