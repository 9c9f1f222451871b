"""Bring-your-own vectors at scale to a full map through Dagster: time per stage, peak memory.

    python -m benchmarks.scale [--quick] [--n N]

Generates N clustered 384-d unit vectors (Gaussian clusters on the sphere, with short texts
drawn from a per-cluster vocabulary so topics get keywords), uploads them with
``add_data(embeddings=...)`` and runs ``create_index`` (one in-process Dagster run) in a fresh
store. Per-stage seconds come from each asset's materialization metadata; peak memory is the
process's maximum resident set, and per stage the highest resident and anonymous memory sampled
while it ran, each with the private memory of its forked workers (the topic tree's) added.
Last line: ``scale: <total> ratio=<goal seconds/total> target=>=1 quality=<peak
resident and anonymous GiB>``, the goal being 20 minutes at 1M rows, scaled linearly to N.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RssSampler, stage_windows

GOAL_SECONDS_AT_1M = 20 * 60


def clustered_vectors(n: int, dim: int = 384, clusters: int = 200, seed: int = 0):
    """``(vectors, cluster of each row)``: unit vectors around random cluster centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in blocks: a 1M x 384 float64 draw would take 3 GB
        stop = min(start + 100_000, n)
        noise = rng.normal(scale=0.6, size=(stop - start, dim)).astype(np.float32)
        vectors[start:stop] = centres[labels[start:stop]] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def cluster_texts(labels: np.ndarray, seed: int = 0) -> list[str]:
    """Short texts whose words depend on the cluster, so keywords differ between topics."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(4000)])
    per_cluster = rng.integers(0, len(vocab), (labels.max() + 1, 12))
    picks = per_cluster[labels][
        np.arange(len(labels))[:, None], rng.integers(0, 12, (len(labels), 5))
    ]
    return [" ".join(row) for row in vocab[picks]]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    parser.add_argument("--n", type=int, help="rows (default 1,000,000)")
    args = parser.parse_args(argv)
    n = args.n or (20_000 if args.quick else 1_000_000)

    vectors, labels = clustered_vectors(n)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": cluster_texts(labels)})
    with tempfile.TemporaryDirectory() as home, RssSampler() as memory:
        os.environ["ATLAS_HOME"] = home
        os.environ["DAGSTER_HOME"] = str(Path(home) / ".dagster")
        from atlas_assets import AtlasDataset

        ds = AtlasDataset("scale-bench", unique_id_field="id")
        start = time.time()
        ds.add_data(frame, embeddings=vectors)
        windows = {"add_data": (start, time.time())}
        del vectors
        start = time.perf_counter()
        atlas_map = ds.create_index(
            topic_model={"topic_label_field": "text"}, duplicate_detection=True
        )
        total = time.perf_counter() - start
        windows.update(stage_windows())
        assert atlas_map.embeddings.latent.shape == (n, 384)
    # The kernel's peak misses the forked workers' own memory, which the samples add.
    peak_rss_mb, peak_anon_mb = memory.peak_mb()
    peak_gb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_rss_mb) / 1024
    goal = GOAL_SECONDS_AT_1M * n / 1_000_000
    # Resident counts the latent's memory-mapped pages, which the kernel can drop; anonymous is
    # what the process itself holds.
    print(f"{'stage':<12}{'seconds':>10}{'peak resident GiB':>20}{'peak anonymous GiB':>20}")
    for stage, (begin, end) in windows.items():
        rss, anon = memory.peak_mb(begin, end)
        print(f"{stage:<12}{end - begin:>10.1f}{rss / 1024:>20.2f}{anon / 1024:>20.2f}")
    upload = windows["add_data"][1] - windows["add_data"][0]
    print(f"{'build_map':<12}{total:>10.1f}   (whole Dagster run, checks included)")
    # ratio: the 20-minutes-at-1M goal scaled linearly to n, over the time taken.
    line = (
        f"scale: n={n} total={total + upload:.0f}s ratio={goal / (total + upload):.2f} "
        f"target=>=1 quality=peak_rss={peak_gb:.1f}GiB,anonymous={peak_anon_mb / 1024:.1f}GiB"
        "(goal<=8GB)"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
