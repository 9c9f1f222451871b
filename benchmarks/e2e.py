"""Texts to a full map through Dagster, against doing the two big steps by hand.

    python -m benchmarks.e2e [--quick] [--n N]

Ours: ``AtlasDataset.add_data`` then ``create_index`` with topics and duplicates, in a fresh
store: one real Dagster run that embeds, builds the kNN graph, the projection, the topic tree, the
duplicate classes and the tags snapshot, with every blocking check. The baseline is what a
notebook does for a bare map of the same texts: plain ``SentenceTransformer.encode`` in float32,
then ``umap.UMAP().fit_transform`` (no topics, no duplicates, no checks, nothing stored).

The texts are the bundled arXiv sample (title and abstract; N = 2,000, 300 with ``--quick``). Both
are warmed up first on a few texts (model load, numba compiles, Dagster's first run), shown and
excluded. Last line: ``e2e: <rows, seconds> ratio=<baseline seconds / ours> target=>=1
quality=<what the map holds>``: the goal is a whole map for no more than a bare one by hand.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.common import ARXIV_SAMPLE, machine, print_table, result_line, stage_seconds


def build_map(frame: pd.DataFrame, name: str):
    """Our whole map of ``frame`` (a real Dagster run in the current store); seconds per stage."""
    from atlas_assets import AtlasDataset

    ds = AtlasDataset(name, unique_id_field="arxiv_id")
    ds.add_data(frame)
    atlas_map = ds.create_index(indexed_field="text", topic_model=True, duplicate_detection=True)
    return atlas_map, stage_seconds()


def by_hand(texts: list[str]):
    """The notebook baseline: plain ``encode`` then ``umap.UMAP()`` with its defaults."""
    import umap

    from benchmarks.embed import plain_model

    model = plain_model()
    start = time.perf_counter()
    vectors = model.encode(texts, convert_to_numpy=True)
    encode = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = umap.UMAP().fit_transform(vectors)
    return coords, encode, time.perf_counter() - start - encode


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 texts")
    parser.add_argument("--n", type=int, default=None, help="texts (default 2,000; quick 300)")
    args = parser.parse_args(argv)
    sample = pd.read_csv(ARXIV_SAMPLE, dtype={"arxiv_id": str})
    sample["text"] = sample.title.fillna("") + ". " + sample.abstract.fillna("")
    n = min(args.n or (300 if args.quick else 2_000), len(sample))
    frame = sample.head(n)[["arxiv_id", "text", "archive"]]

    print(machine())
    with tempfile.TemporaryDirectory() as home:
        os.environ["ATLAS_HOME"] = home
        os.environ["DAGSTER_HOME"] = str(Path(home) / ".dagster")
        start = time.perf_counter()
        warm = sample.iloc[-60:][["arxiv_id", "text", "archive"]]
        build_map(warm, "e2e-warm-up")
        by_hand(warm.text.tolist())
        warm_up = time.perf_counter() - start
        print(f"warm-up (both, 60 texts): {warm_up:.1f} s; excluded", flush=True)

        start = time.perf_counter()
        atlas_map, stages = build_map(frame, "e2e-bench")
        ours = time.perf_counter() - start
        n_topics = len(atlas_map.topics.metadata)
        n_dupes = len(atlas_map.duplicates.deletion_candidates())
        assert atlas_map.embeddings.projected.shape[0] == n

    coords, encode, layout = by_hand(frame.text.tolist())
    assert coords.shape == (n, 2)
    baseline = encode + layout

    rows = [[f"ours: {stage}", seconds] for stage, seconds in stages.items()]
    rows.append(["ours: whole Dagster run (checks, I/O included)", ours])
    rows.append(["by hand: SentenceTransformer.encode", encode])
    rows.append(["by hand: umap.UMAP().fit_transform", layout])
    rows.append(["by hand: total", baseline])
    print(f"{n} arXiv titles and abstracts to a map")
    print_table(["step", "seconds"], rows)
    return result_line(
        "e2e",
        f"{n} texts in {ours:.1f} s (by hand {baseline:.1f} s)",
        baseline / ours,
        ">=1",
        f"map:{n}rows,{n_topics}topics,{n_dupes}deletion_candidates,checks_passed",
    )


if __name__ == "__main__":
    main()
