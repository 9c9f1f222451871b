"""Opening a big map's resources: memory-mapped (ours) versus reading them into memory.

    python -m benchmarks.reader [--quick] [--n N]

Writes an N-row map's ``dataset``, ``latent`` (384-d) and ``topics`` resources with the store's
own writers (no model or UMAP: this measures the reader), then opens ``data.tb``,
``topics.tb`` and ``embeddings.latent`` through ``AtlasDataset`` and reports the time and the
growth of the resident set, beside a baseline that reads the same files into memory. Last line:
``reader: <seconds> ratio=<baseline RSS growth / ours> target=>=10 quality=<ours MB>``.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

from benchmarks.common import rss_mb


def growth_mb(before: float) -> float:
    """RSS growth since ``before``; never negative (freed memory of earlier work can shrink it)."""
    return max(rss_mb() - before, 0.0)


def write_map(n: int, dim: int = 384) -> None:
    """An N-row map on disk, written the way the assets write it."""
    from atlas_assets import AtlasDataset
    from atlas_assets.store import bind_run, commit, write_resource
    from atlas_assets.store.datasets import update_meta
    from atlas_assets.store.resources import write_latent

    ds = AtlasDataset("reader-bench", unique_id_field="id")
    update_meta(
        ds._paths,
        maps=[
            {
                "name": "reader-bench",
                "id": "m",
                "indexed_field": "text",
                "topic_model": {"build_topic_model": True},
            }
        ],
    )
    rng = np.random.default_rng(0)
    ids = pa.array([f"r{i}" for i in range(n)])
    texts = pa.array([f"text of row {i}" for i in range(n)])
    version = "bench"
    paths = bind_run(ds._paths, "bench")  # a build, published at the end like a run's
    write_resource(
        paths.output("dataset"),
        pa.table({"id": ids, "text": texts}),
        resource="dataset",
        dataset_version=version,
    )
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        block = rng.normal(size=(min(100_000, n - start), dim)).astype(np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    write_latent(paths.output("latent"), pa.table({"id": ids}), vectors, dataset_version=version)
    del vectors
    topics = pa.table(
        {
            "id": ids,
            "topic_depth_1": pa.array(np.array(["A", "B"])[rng.integers(0, 2, n)]),
            "topic_depth_2": pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, n)]),
        }
    )
    write_resource(paths.output("topics"), topics, resource="topics", dataset_version=version)
    commit(ds._paths, "bench")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--n", type=int, help="rows (default 1,000,000)")
    args = parser.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory() as home:
        os.environ["ATLAS_HOME"] = home
        write_map(n)
        from atlas_assets import AtlasDataset

        gc.collect()
        before, start = rss_mb(), time.perf_counter()
        atlas_map = AtlasDataset("reader-bench").maps[0]
        tables = (atlas_map.data.tb, atlas_map.topics.tb)
        latent = atlas_map.embeddings.latent
        assert latent.shape == (n, 384) and all(t.num_rows == n for t in tables)
        ours_s, ours_mb = time.perf_counter() - start, growth_mb(before)

        files = atlas_map._published
        gc.collect()
        before, start = rss_mb(), time.perf_counter()
        copies = [
            pa.ipc.open_file(pa.OSFile(str(files.path(r)))).read_all()
            for r in ("dataset", "topics", "latent")
        ]
        base_s, base_mb = time.perf_counter() - start, growth_mb(before)
        assert sum(c.num_rows for c in copies) == 3 * n

    size_mb = n * 384 * 4 / 1024**2
    print(f"{'reader':<28}{'seconds':>10}{'RSS growth MB':>16}")
    print(f"{'ours (memory-mapped)':<28}{ours_s:>10.3f}{ours_mb:>16.1f}")
    print(f"{'read into memory':<28}{base_s:>10.3f}{base_mb:>16.1f}")
    print(f"({n} rows; the latent vectors alone are {size_mb:.0f} MB on disk)")
    line = (
        f"reader: n={n} open={ours_s:.3f}s ratio={base_mb / max(ours_mb, 1.0):.1f} "
        f"target=>=10 quality=rss_growth={ours_mb:.1f}MB"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
