"""The explorer's pure helpers: categories, coordinates, request checks, query terms; and the
semantic search of a map built on the static fast path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from atlas_assets.explorer.state import categorize, display_value, normalize_xy, shlex_terms
from atlas_assets.explorer.validation import check_indices


def test_categorize_keeps_the_most_frequent_values_then_other_and_none() -> None:
    values = pa.array(["a"] * 5 + ["b"] * 3 + ["c", "d", None])
    cats = categorize(values, limit=3)
    assert cats.labels == ["a", "b", "(other)", "(none)"]
    assert cats.kinds == ["value", "value", "other", "none"]
    assert cats.counts == [5, 3, 2, 1]
    assert cats.codes.tolist() == [0] * 5 + [1] * 3 + [2, 2, 3]


def test_categorize_numbers_and_booleans_as_text() -> None:
    assert categorize(pa.array([True, False, True])).labels == ["true", "false"]
    assert categorize(pa.array([3, 3, 1])).labels == ["3", "1"]


def test_normalize_xy_fits_the_unit_square_keeping_the_aspect() -> None:
    x, y = normalize_xy(np.array([0.0, 10.0]), np.array([0.0, 2.0]))
    assert x.dtype == np.float32 and np.abs(x).max() < 1 and np.abs(y).max() < 0.25
    assert np.isclose(x[1] - x[0], 5 * (y[1] - y[0]))


@pytest.mark.parametrize("raw", [None, "1,2", [1.0], [True], ["1"], [-1], [10], list(range(11))])
def test_check_indices_refuses_anything_but_positions(raw) -> None:
    with pytest.raises(ValueError):
        check_indices(raw, 10)


def test_check_indices_deduplicates_and_sorts() -> None:
    assert check_indices([3, 1, 3], 10).tolist() == [1, 3]


def test_display_value_is_json_safe() -> None:
    assert display_value(float("nan")) is None
    assert display_value(float("inf")) == "inf"
    assert display_value(b"\x00\x01") == "<2 bytes>"
    assert display_value({"a": [1]}) == '{"a": [1]}'
    assert display_value("x" * 30_000).endswith("(10000 more chars)")


def test_query_terms_keep_quoted_phrases() -> None:
    assert shlex_terms('pebble  game "exact phrase" "open') == [
        "pebble",
        "game",
        "exact phrase",
        '"open',
    ]


def test_semantic_search_of_a_static_map_embeds_the_query_statically(store, arxiv, static_model):
    """Queries land in the map's own space: a transformer query (384 dimensions) could not
    even be compared with these static vectors."""
    from atlas_assets import AtlasDataset
    from atlas_assets.explorer.state import MapView
    from atlas_assets.lib import static_embed

    static_embed.save(static_model, static_embed.model_file(home=store), source="test")
    frame = arxiv.head(40).reset_index(drop=True)
    ds = AtlasDataset("fast-map", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.create_index(
        indexed_field="title",
        embedding_model={"mode": "static"},
        topic_model=False,
        duplicate_detection=False,
    )
    view = MapView("fast-map")
    assert view.semantic_embedding.mode == "static"
    assert view.semantic_embedding.model == "all-MiniLM-L6-v2"
    title = frame["title"][7]
    positions, distances = view.semantic_search(title, k=3)
    assert view.ids[positions[0]] == frame["arxiv_id"][7] and distances[0] < 1e-5
