"""A store on S3 (moto's server on 127.0.0.1) against the local store: build and open times.

    python -m benchmarks.shared_store [--quick] [--n N] [--reader-n N] [--repeat R]

Builds the same N-row map (bring-your-own 384-d vectors with short texts, as ``benchmarks.scale``:
this measures the store, not the model) through Dagster into a local store and into
``s3://bench/store`` on a moto server run in its own process, alternately, ``--repeat`` times.
Then opens each map (``AtlasDataset(...).maps[0]``, its ``data.tb``, ``embeddings.latent``,
``embeddings.tb``, ``topics.tb``, ``duplicates.tb``): the S3 map once from an empty read cache
(every resource downloaded) and then again from the read cache, against the local open (median
of 15 opens each; again with ``ATLAS_REFRESH_SECONDS=0``, so each open asks S3 for the map's
manifest and ``dataset.json``). Last, a ``--reader-n``-row map (``benchmarks.reader``'s) is
written to S3 and opened from another read cache, twice, recording the resident-set growth of
each open.
Last line: ``shared_store: ... ratio=<S3 build / local build> target=<=1.3
quality=open_ratio=<warm S3 open / local open>(goal<=2),...``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import rss_mb
from benchmarks.scale import cluster_texts, clustered_vectors

MOTO = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""
OPENS = 15


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process (so it does not share this process's GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise RuntimeError("moto's server did not start (is moto[server] installed?)")
    return proc, f"http://127.0.0.1:{port}"


STORE_SETTINGS = (
    "ATLAS_HOME",
    "ATLAS_CACHE_DIR",
    "DAGSTER_HOME",
    "ATLAS_STORAGE_OPTIONS",
    "ATLAS_REFRESH_SECONDS",
)


@contextlib.contextmanager
def moto_bucket() -> Iterator[dict[str, str]]:
    """A moto server with the bucket ``bench``, ``ATLAS_STORAGE_OPTIONS`` pointing at it; yields
    those options. After: the server stopped and this process's store settings restored."""
    saved = {k: os.environ.get(k) for k in STORE_SETTINGS}
    moto, endpoint = start_moto()
    try:
        import s3fs

        options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench"}
        s3fs.S3FileSystem(**options).mkdir("bench")
        os.environ["ATLAS_STORAGE_OPTIONS"] = json.dumps(options)
        yield options
    finally:
        moto.stdin.close()
        try:
            moto.wait(timeout=30)
        except subprocess.TimeoutExpired:
            moto.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def use_store(home: str, work: Path, cache: str = "cache") -> None:
    """Point this process at store ``home`` (read cache and Dagster instance under ``work``)."""
    os.environ["ATLAS_HOME"] = home
    os.environ["ATLAS_CACHE_DIR"] = str(work / cache)
    os.environ["DAGSTER_HOME"] = str(work / "dagster")


def build(name: str, frame: pd.DataFrame, vectors: np.ndarray) -> float:
    """Seconds to add the rows and build the full map through Dagster."""
    from atlas_assets import AtlasDataset

    start = time.perf_counter()
    ds = AtlasDataset(name, unique_id_field="id")
    ds.add_data(frame, embeddings=vectors)
    ds.create_index(topic_model={"topic_label_field": "text"}, duplicate_detection=True)
    return time.perf_counter() - start


def open_map(name: str) -> float:
    """Seconds to open the published map and map its resources."""
    from atlas_assets import AtlasDataset

    start = time.perf_counter()
    atlas_map = AtlasDataset(name).maps[0]
    n = atlas_map.data.tb.num_rows
    tables = (atlas_map.embeddings.tb, atlas_map.topics.tb, atlas_map.duplicates.tb)
    assert atlas_map.embeddings.latent.shape[0] == n and all(t.num_rows == n for t in tables)
    return time.perf_counter() - start


def reader_rss(n: int, url: str, options: str, work: Path) -> tuple[float, float, float]:
    """Resident growth (MB) of the first open (downloading) and the second open (read cache)
    of an n-row map on S3, and the map's size on S3 (MB)."""
    from benchmarks.reader import growth_mb, write_map

    os.environ["ATLAS_STORAGE_OPTIONS"] = options
    use_store(f"{url}-reader", work, "reader-writer")
    write_map(n)
    from atlas_assets import AtlasDataset
    from atlas_assets.store import atlas_home

    size = sum(f.stat().st_size for f in atlas_home().rglob("*.arrow")) / 1024**2
    use_store(f"{url}-reader", work, "reader-cache")  # another machine: an empty read cache
    growth = []
    for _ in range(2):
        gc.collect()
        before = rss_mb()
        atlas_map = AtlasDataset("reader-bench").maps[0]
        tables = (atlas_map.data.tb, atlas_map.topics.tb)
        latent = atlas_map.embeddings.latent
        assert latent.shape == (n, 384) and all(t.num_rows == n for t in tables)
        growth.append(growth_mb(before))
        del atlas_map, tables, latent
    return growth[0], growth[1], size


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rows, 20,000 for the reader")
    parser.add_argument("--n", type=int, help="rows of the built map (default 20,000)")
    parser.add_argument("--reader-n", type=int, help="rows of the opened map (default 200,000)")
    parser.add_argument("--repeat", type=int, default=1, help="builds of each store (alternated)")
    args = parser.parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    reader_n = args.reader_n or (20_000 if args.quick else 200_000)
    vectors, labels = clustered_vectors(n)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": cluster_texts(labels)})
    with moto_bucket() as options, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        times: dict[str, list[float]] = {"local": [], "s3": []}
        for i in range(args.repeat):
            for kind in ("local", "s3"):
                home = str(work / "local") if kind == "local" else "s3://bench/store"
                use_store(home, work / kind)
                times[kind].append(build(f"shared-{i}", frame, vectors))
        use_store(str(work / "local"), work / "local")
        open_map("shared-0")  # the page cache warm, as for the S3 map's cached files
        local_open = statistics.median(open_map("shared-0") for _ in range(OPENS))
        use_store("s3://bench/store", work / "s3", "fresh-cache")
        cold_open = open_map("shared-0")
        warm_open = statistics.median(open_map("shared-0") for _ in range(OPENS))
        os.environ["ATLAS_REFRESH_SECONDS"] = "0"  # ask the store for the manifest each time
        asking_open = statistics.median(open_map("shared-0") for _ in range(OPENS))
        first_mb, second_mb, size_mb = reader_rss(
            reader_n, "s3://bench/store", json.dumps(options), work
        )

    local_s, s3_s = min(times["local"]), min(times["s3"])
    print(f"{'store':<34}{'seconds':>10}")
    print(f"{'build, local store':<34}{local_s:>10.2f}   (all: {times['local']})")
    print(f"{'build, S3 (moto)':<34}{s3_s:>10.2f}   (all: {times['s3']})")
    print(f"{'open, local store':<34}{local_open:>10.4f}   (median of {OPENS})")
    print(f"{'open, S3, empty read cache':<34}{cold_open:>10.4f}")
    print(f"{'open, S3, from the read cache':<34}{warm_open:>10.4f}   (median of {OPENS})")
    print(
        f"{'  the same, asking the store':<34}{asking_open:>10.4f}   (ATLAS_REFRESH_SECONDS=0: "
        "the manifest and dataset.json read from S3 at each open)"
    )
    print(
        f"{reader_n}-row map on S3 ({size_mb:.0f} MB): RSS growth {first_mb:.1f} MB on the "
        f"first open (download), {second_mb:.1f} MB on the second (read cache)"
    )
    line = (
        f"shared_store: n={n} build_local={local_s:.1f}s build_s3={s3_s:.1f}s "
        f"ratio={s3_s / local_s:.2f} target=<=1.3 "
        f"quality=open_ratio={warm_open / local_open:.2f}(goal<=2),"
        f"open_asking_ratio={asking_open / local_open:.1f},"
        f"reader_rss={reader_n}rows:{first_mb:.0f}MB,{second_mb:.0f}MB"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
