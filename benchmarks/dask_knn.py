"""Benchmark of the kNN graph searched on Dask: the single-machine graph vs blocks of query rows
searched as Dask tasks, in one process run.

Run ``python -m benchmarks.dask_knn [--quick] [--n N] [--workers W] [--block-rows B]
[--rounds R]``. Vectors: N clustered 384-d unit vectors, the generator of ``benchmarks/scale.py``
(default 1,000,000; ``--quick`` 60,000, still above the 50k rows from which the graph is HNSW
built and searched in k-means-cell order). k is what the ``knn_graph`` asset uses by default (30,
so 31 searched: the row itself is dropped afterwards).

Both paths share one build, ``atlas_assets.lib.knn._hnsw_in_order`` (the k-means cell order and
the HNSW index added in it, on all of this machine's cores), because a parallel HNSW build is
not repeatable and only the same index lets the two searches be compared row for row. Then:

* single machine: ``knn._search_in_order``, what ``knn_graph`` does at this size, faiss on all
  cores;
* on Dask: the index written once to a file (``faiss.write_index``) that every worker of a
  ``distributed.LocalCluster`` (W single-thread processes on 127.0.0.1, dashboard on
  127.0.0.1) maps read-only (``IO_FLAG_MMAP_IFC``: the page cache holds one copy for all
  workers), then one task per block of B query rows (index positions, so a task's arguments are
  two integers and its queries are read from the mapped index), the results placed by block.

An HNSW search of one query depends only on the index, the query and ``efSearch``, so searching
in blocks on other processes gives the single-machine graph exactly; the benchmark checks that
row for row (``identical=``) and measures both graphs' recall against exact search on 1,000
sampled rows. Shipping is timed: writing the file and every worker mapping it and reading it
once; gathering the results is part of the Dask search's time. The two searches alternate over R
rounds, each keeping its best. Starting the cluster is reported, not counted (a cluster is
already running where this would be used).

On the same cores the Dask search can only add overhead; the scaling model printed after the
table estimates the graph's time with W single-thread workers elsewhere: the build here, plus
shipping the index file to them (in parallel, at ``--bandwidth`` GB/s each), plus the measured
Dask search (scheduling and idle workers included) spread over W instead of the measured
workers, plus gathering the results here. The build stays on one machine, so it bounds the
gain. A second model prices the alternative with no build: an exact graph, every block of query
rows searched against all rows as ``knn._exact_search`` does below 50k rows (its products and
candidate selection timed here on a few blocks at N rows). The last line reads

``dask_knn: <Dask total s> vs <single total s> s (...) model_limit=<the model's ratio with
unlimited workers> exact_here=<the exact graph's modelled seconds here>s ratio=<single total /
Dask total, here> target=>=1 quality=identical=<rows equal>/<n>,recall=<of the single-machine
neighbours>,exact_recall=<Dask graph vs exact search on the sample>(ok|GRAPHS DIFFER)``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atlas_assets.lib import knn
from benchmarks.common import RssSampler, loopback_cluster, machine, print_table, result_line, timed

QUICK_N = 60_000
DEFAULT_N = 1_000_000
EXACT_SAMPLE = 1_000
MODEL_WORKERS = (2, 8, 32, 128)

# The mapped index of each file this worker process has opened (one per benchmark run).
_INDEXES: dict[str, object] = {}


def _anon_mb() -> float:
    """This process's anonymous resident memory in MiB (what it holds itself, not file pages)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def warm_worker() -> float:
    """Imports a worker needs, done before anything is timed; returns its anonymous MiB."""
    import faiss

    faiss.omp_set_num_threads(1)  # one thread per worker process, as Dask starts them
    return _anon_mb()


def load_index(path: str) -> tuple[float, float]:
    """Map the index file read-only and read it through once (so the first block does not pay
    the page faults); ``(seconds, anonymous MiB after)``."""
    import faiss

    start = time.perf_counter()
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    for lo in range(0, index.ntotal, 65_536):
        index.reconstruct_n(lo, min(65_536, index.ntotal - lo))
    _INDEXES[path] = index
    return time.perf_counter() - start, _anon_mb()


def drop_index(path: str) -> None:
    _INDEXES.pop(path, None)


def search_block(path: str, start: int, stop: int, k: int):
    """One task: the ``k`` nearest indexed rows of index positions ``start:stop`` (as
    ``knn._search_in_order`` searches them), and the seconds it took on the worker."""
    began = time.perf_counter()
    if path not in _INDEXES:  # a worker that joined or restarted after the load
        load_index(path)
    index = _INDEXES[path]
    found, dist = knn.search(index, index.reconstruct_n(start, stop - start), k)
    return found, dist, time.perf_counter() - began


def search_on_cluster(client, path: str, order: np.ndarray, k: int, block_rows: int):
    """``(indices, distances, worker seconds per block)``: every row's ``k`` nearest as
    ``knn._search_in_order`` gives them, one Dask task per block of ``block_rows`` positions."""
    from distributed import as_completed

    n = len(order)
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    futures = {
        client.submit(search_block, path, lo, min(lo + block_rows, n), k, pure=False): lo
        for lo in range(0, n, block_rows)
    }
    seconds = []
    for future in as_completed(futures, loop=client.loop):
        lo = futures[future]
        found, found_dist, took = future.result()
        future.release()
        rows = order[lo : lo + len(found)]
        idx[rows] = np.where(found >= 0, order[found], -1)  # index positions back to row ids
        dist[rows] = found_dist
        seconds.append(took)
    return idx, dist, seconds


def neighbour_recall(found: np.ndarray, truth: np.ndarray, block: int = 32_768) -> float:
    """Mean share of each row's ``truth`` neighbours that ``found`` also lists."""
    hits = 0
    for lo in range(0, len(truth), block):
        a, b = found[lo : lo + block], truth[lo : lo + block]
        hits += int((b[:, :, None] == a[:, None, :]).any(axis=2).sum())
    return hits / truth.size


def exact_recall(vectors: np.ndarray, found: np.ndarray, rows: np.ndarray, k: int) -> float:
    """Recall of ``found[rows]`` against the exact ``k`` nearest of those rows (brute force)."""
    import faiss

    _, truth = faiss.knn(vectors[rows], vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return neighbour_recall(found[rows], truth)


def exact_block_seconds(vectors: np.ndarray, k: int, blocks: int = 3) -> float:
    """Seconds, on all cores here, of the candidate step of ``knn._exact_search`` for one block
    of ``knn._PRODUCT_ROWS`` query rows against every row (the products, in bfloat16 where the
    CPU has it, and ``knn._select``); the best of ``blocks`` after a first that loads numba's
    cache. Its float32 re-rank of 2k + 16 candidates a row is left out (0.1 of 0.85 s at 20k
    rows, and it does not grow with the rows searched)."""
    n, rows = len(vectors), knn._PRODUCT_ROWS
    m = min(knn._candidates(k), n)
    bf16 = knn.native_bf16()
    if bf16:
        import torch

        half = torch.from_numpy(vectors).to(torch.bfloat16)
        right = half.T.contiguous()
    candidates = np.empty((rows, m), np.int64)
    tops = np.empty((rows, -(-n // knn._CHUNK)), np.int32)
    keys = np.empty((rows, m), np.int32)
    times = []
    for b in range(blocks + 1):
        lo = b * rows % max(n - rows, 1)
        began = time.perf_counter()
        if bf16:
            bits = (half[lo : lo + rows] @ right).view(torch.int16).numpy()
        else:
            bits = ((vectors[lo : lo + rows] @ vectors.T).view(np.int32) >> 16).astype(np.int16)
        knn._select(bits, 0, k, candidates, tops, keys)
        times.append(time.perf_counter() - began)
        del bits
    return min(times[1:])


def _model_table(single: float, fixed: float, ship_bytes: float, spread, bandwidth: float) -> None:
    """Per W workers: the search spread over them (``spread(W)`` seconds), then the total and
    the single machine's seconds over it, twice: with the shipped data read by every worker in
    parallel (a shared store) and sent from the run's process to one worker after another."""
    rate = bandwidth * 1e9
    rows = []
    for w in MODEL_WORKERS:
        parallel = fixed + ship_bytes / rate + spread(w)
        serial = fixed + w * ship_bytes / rate + spread(w)
        rows.append(
            [w, f"{spread(w):.1f}", f"{parallel:.1f}", f"{single / parallel:.2f}"]
            + [f"{serial:.1f}", f"{single / serial:.2f}"]
        )
    headers = ["workers", "search s", "total s, shared store", "x single", "total s, sent"]
    print_table([*headers, "x single"], rows)


def scaling(
    n: int,
    k: int,
    single: float,
    build: float,
    write: float,
    index_bytes: int,
    search: float,
    workers: int,
    bandwidth: float,
) -> float:
    """Print the model of the graph's seconds with W remote single-thread workers; return the
    ratio (single machine / Dask) with unlimited workers and a shared store."""
    gather = n * k * 12 / (bandwidth * 1e9)  # int64 ids and float32 distances, to this process
    limit = single / (build + write + index_bytes / (bandwidth * 1e9) + gather)
    print(
        f"scaling model ({n:,} rows; a model, not measured): the build stays here "
        f"({build:.1f} s), the {index_bytes / 1e9:.2f} GB index is written ({write:.1f} s) and "
        f"shipped at {bandwidth:g} GB/s a worker; the Dask search measured above ({search:.1f} s "
        f"on {workers} workers; scheduling, idle workers and loopback results included) spreads "
        f"over W; results come back at {bandwidth:g} GB/s ({gather:.1f} s). Single machine: "
        f"{single:.1f} s; unlimited workers: at most {limit:.2f}x."
    )
    _model_table(
        single, build + write + gather, index_bytes, lambda w: search * workers / w, bandwidth
    )
    return limit


def exact_scaling(n: int, dim: int, k: int, single: float, block: float, bandwidth: float) -> float:
    """Print the model of an exact graph searched in blocks of query rows on W workers (no
    build; each worker holds every vector); return its seconds on this machine's cores."""
    cores = os.cpu_count() or 1
    here = -(-n // knn._PRODUCT_ROWS) * block
    gather = n * k * 12 / (bandwidth * 1e9)
    print(
        f"alternative, exact graph in blocks ({n:,} rows; a model from {block:.2f} s per "
        f"{knn._PRODUCT_ROWS} query rows against all, measured here on {cores} cores: the "
        f"candidate step of knn._exact_search, its re-rank left out): {here:.0f} s here, no "
        f"build; every worker gets the {n * dim * 4 / 1e9:.2f} GB of vectors; a single-thread "
        f"worker searches at this machine's speed over its cores"
    )
    _model_table(single, gather, n * dim * 4, lambda w: here * cores / w, bandwidth)
    return here


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dask_knn", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N:,} rows")
    parser.add_argument("--n", type=int, default=None, help=f"rows (default {DEFAULT_N:,})")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--block-rows", type=int, default=32_768, help="query rows per task")
    parser.add_argument("--rounds", type=int, default=2, help="alternating search rounds")
    parser.add_argument(
        "--bandwidth", type=float, default=1.25, help="GB/s per worker in the model (10 Gbit/s)"
    )
    args = parser.parse_args(argv)
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)

    import faiss
    from distributed import Client

    from atlas_assets.defs.assets.knn_graph import MIN_NEIGHBORS
    from atlas_assets.options import NomicProjectOptions
    from benchmarks.scale import clustered_vectors

    if n < knn._ORDER_FROM:
        parser.error(f"--n must be at least {knn._ORDER_FROM:,}: below, the graph is not HNSW")
    # As the knn_graph asset with the default projection, which searches k + 1 (itself too).
    k = max(MIN_NEIGHBORS, NomicProjectOptions().umap_params()["n_neighbors"] - 1) + 1
    print(machine())
    vectors, _ = clustered_vectors(n)
    print(f"{n:,} clustered 384-d vectors, k={k - 1} (+ the row itself)", flush=True)

    with RssSampler() as memory, tempfile.TemporaryDirectory(prefix="dask-knn-") as tmp:
        built, t_build = timed(lambda: knn._hnsw_in_order(vectors))
        order, index = built
        build = t_build.seconds
        print(f"build (cell order + HNSW, all cores): {build:.1f} s", flush=True)
        path = str(Path(tmp) / "index.faiss")
        _, t_write = timed(lambda: faiss.write_index(index, path))
        index_bytes = os.path.getsize(path)

        started = time.perf_counter()
        with (
            loopback_cluster(args.workers) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            start_cluster = time.perf_counter() - started
            client.run(warm_worker)
            loads, t_load = timed(lambda: client.run(load_index, path))
            ship = t_write.seconds + t_load.seconds
            worker_anon = max(mb for _, mb in loads.values())

            def here():
                return knn._search_in_order(index, vectors, order, k)

            def there():
                return search_on_cluster(client, path, order, k, args.block_rows)

            best = {"single": math.inf, "dask": math.inf}
            out: dict[str, tuple] = {}
            for r in range(args.rounds):
                steps = [("single", here), ("dask", there)]
                for name, fn in steps if r % 2 == 0 else steps[::-1]:
                    result, t = timed(fn)
                    if t.seconds < best[name]:  # keep the best round's result and block times
                        out[name], best[name] = result, t.seconds
                    print(f"  round {r + 1}: {name} search {t.seconds:.1f} s", flush=True)
            worker_anon = max(worker_anon, *client.run(_anon_mb).values())
            client.run(drop_index, path)
        load = os.getloadavg()
        built = index = None  # freed before the exact search below

    (idx_a, dist_a), (idx_b, dist_b, block_seconds) = out["single"], out["dask"]
    identical = int(((idx_a == idx_b) & (dist_a == dist_b)).all(axis=1).sum())
    recall = neighbour_recall(idx_b, idx_a)
    sample = np.sort(np.random.default_rng(0).choice(n, min(EXACT_SAMPLE, n), replace=False))
    exact = {name: exact_recall(vectors, out[name][0], sample, k) for name in out}
    _, peak_anon = memory.peak_mb()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    exact_block = exact_block_seconds(vectors, k)

    single = build + best["single"]
    dask = build + ship + best["dask"]
    ratio = single / dask
    search_ratio = best["single"] / best["dask"]
    print(
        f"\nkNN graph of {n:,} rows, k={k - 1}, best of {args.rounds} searches "
        f"(load average then {' '.join(f'{x:.1f}' for x in load)}; cluster start "
        f"{start_cluster:.1f} s, not counted)"
    )
    print_table(
        ["path", "build s", "ship s", "search s", "total s", "x single", "blocks"],
        [
            ["single machine (faiss on all cores)", build, "-", best["single"], single, "1.00", 1],
            [
                f"dask ({args.workers} workers x 1 thread)",
                build,
                f"{ship:.1f} (write {t_write.seconds:.1f}, map {t_load.seconds:.1f})",
                best["dask"],
                dask,
                f"{ratio:.2f}",
                f"{len(block_seconds)} ({sum(block_seconds):.1f} worker-s)",
            ],
        ],
    )
    print(
        f"memory: this process peak {peak_rss / 1024:.2f} GiB resident, "
        f"{peak_anon / 1024:.2f} GiB anonymous; each worker at most {worker_anon / 1024:.2f} GiB "
        f"anonymous (the {index_bytes / 1e9:.2f} GB index file is mapped, one copy in the page "
        f"cache for all)"
    )
    print(
        f"same graph: {identical:,}/{n:,} rows identical, recall of the single-machine "
        f"neighbours {recall:.4f}; recall@{k} vs exact on {len(sample):,} rows: single "
        f"{exact['single']:.4f}, dask {exact['dask']:.4f}\n"
    )
    limit = scaling(
        n,
        k,
        single,
        build,
        t_write.seconds,
        index_bytes,
        best["dask"],
        args.workers,
        args.bandwidth,
    )
    exact_here = exact_scaling(n, vectors.shape[1], k, single, exact_block, args.bandwidth)
    ok = "ok" if identical == n else "GRAPHS DIFFER"
    return result_line(
        "dask_knn",
        f"{dask:.1f} vs {single:.1f} s ({n} rows, {args.workers} workers x 1 thread vs all "
        f"cores; search {best['dask']:.1f} vs {best['single']:.1f} s, "
        f"search_ratio={search_ratio:.2f}, ship {ship:.1f} s) "
        f"model_limit={limit:.2f} exact_here={exact_here:.0f}s",
        ratio,
        ">=1",
        f"identical={identical}/{n},recall={recall:.4f},exact_recall={exact['dask']:.4f}({ok})",
    )


if __name__ == "__main__":
    main()
