"""Shared helpers of the benchmarks: real corpora, an embedding cache, a timer and the output.

Corpora other than the bundled arXiv sample live in ``../shared/datasets`` beside the checkout
(override with ``ATLAS_BENCH_DATASETS``); a benchmark that needs one that is absent prints a
``skipped:`` line and goes on without it. Embeddings computed for a benchmark are kept in the
product's own embedding cache (``store.cache.EmbeddingCache``, one vector per model and text
hash, filled through ``lib.embed.embed_missing``) laid out as in a store whose home is
``data/bench-cache/`` (git-ignored by its own ``.gitignore``; override with
``ATLAS_BENCH_CACHE``), so later runs and other stages embed only texts not seen before.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("ATLAS_BENCH_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
DEFAULT_CACHE = REPO_ROOT / "data" / "bench-cache"
ARXIV_SAMPLE = REPO_ROOT / "data" / "arxiv_2007_sample.csv.gz"


@dataclass
class Corpus:
    """Texts of one corpus, with an optional label per text."""

    name: str
    texts: list[str]
    labels: np.ndarray | None = None


def skip(what: str, why: str) -> None:
    """Say, on one line, that part of a benchmark is skipped and why."""
    print(f"skipped: {what}: {why}", flush=True)


def _head(corpus: Corpus, n: int | None) -> Corpus:
    if n is None or n >= len(corpus.texts):
        return corpus
    labels = None if corpus.labels is None else corpus.labels[:n]
    return Corpus(corpus.name, corpus.texts[:n], labels)


def ag_news(n: int | None = None) -> Corpus | None:
    """The AG News test split (7,600 short snippets, 4 classes), or None when it is absent."""
    path = DATASETS / "ag_news_test" / "ag_news_test.csv.gz"
    if not path.exists():
        skip("AG News", f"{path} not found (../shared/datasets is not beside this checkout)")
        return None
    df = pd.read_csv(path)
    labels = df.label_name.astype(str).to_numpy()
    return _head(Corpus("ag_news", df.text.fillna("").tolist(), labels), n)


def reuters(n: int | None = None) -> Corpus | None:
    """Reuters-21578 (title + body of the 21,578 newswire items that have text; labels are each
    item's first topic group, empty when it has none), or None when it is absent."""
    path = DATASETS / "reuters21578" / "reuters21578.csv.gz"
    if not path.exists():
        skip("Reuters-21578", f"{path} not found (../shared/datasets is not beside this checkout)")
        return None
    df = pd.read_csv(path)
    texts = (df.title.fillna("") + ". " + df.body.fillna("")).str.strip(" .")
    df, texts = df[texts != ""], texts[texts != ""]
    labels = df.topic_groups.fillna("").astype(str).str.split(";").str[0].to_numpy()
    return _head(Corpus("reuters", texts.tolist(), labels), n)


def arxiv(n: int | None = None) -> Corpus:
    """The bundled arXiv sample (2,000 title + abstract texts); labels are the 18 archives."""
    df = pd.read_csv(ARXIV_SAMPLE)
    texts = (df.title.fillna("") + ". " + df.abstract.fillna("")).tolist()
    return _head(Corpus("arxiv", texts, df.archive.astype(str).to_numpy()), n)


def cache_dir() -> Path:
    """The benchmarks' cache folder, created and git-ignored (``ATLAS_BENCH_CACHE`` moves it)."""
    cache = Path(os.environ.get("ATLAS_BENCH_CACHE", DEFAULT_CACHE))
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return cache


def vector_cache(model: str | None = None):
    """The product's embedding cache of ``model``'s transformer vectors (default: the bundled
    MiniLM), in the benchmarks' cache folder laid out as a store."""
    from atlas_assets.lib.embed import model_key
    from atlas_assets.options import DEFAULT_MODEL
    from atlas_assets.store.cache import EmbeddingCache
    from atlas_assets.store.layout import embedding_cache_dir

    return EmbeddingCache(embedding_cache_dir(model_key(model or DEFAULT_MODEL), cache_dir()))


def cached_vectors(model: str, texts: Sequence[str]) -> np.ndarray | None:
    """Cached embeddings of every text of ``texts`` by ``model``, or None if one is missing."""
    from atlas_assets.lib.embed import text_hashes

    found, vectors = vector_cache(model).lookup(text_hashes(texts))
    return vectors if found.all() else None


def store_vectors(model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
    """Add ``vectors``, the embeddings of ``texts`` by ``model``, to the cache (texts it does
    not hold yet)."""
    from atlas_assets.lib.embed import embed_missing

    def given(missing: list[str]) -> np.ndarray:
        row = {t: i for i, t in enumerate(texts)}
        return np.asarray(vectors, np.float32)[[row[t] for t in missing]]

    embed_missing(texts, vector_cache(model), given)


def embed_cached(texts: Sequence[str], name: str, model: str | None = None) -> np.ndarray:
    """Embeddings of ``texts`` by ``model`` (default: the bundled MiniLM): texts the cache
    holds are read from it, the others embedded (``embed_texts``) and added to it."""
    from atlas_assets.lib.embed import embed_missing, embed_texts
    from atlas_assets.options import DEFAULT_MODEL

    def encode(missing: list[str]) -> np.ndarray:
        print(f"  embedding {len(missing)} {name} texts (cached afterwards) ...", flush=True)
        start = time.perf_counter()
        vectors = embed_texts(missing, model or DEFAULT_MODEL)
        print(f"  embedded {len(missing)} {name} texts in {time.perf_counter() - start:.0f}s")
        return vectors

    vectors, _, _ = embed_missing(list(texts), vector_cache(model), encode)
    return vectors


def embeddings(corpus: Corpus, model: str | None = None) -> np.ndarray:
    """Embeddings of the corpus by ``model`` (default: the bundled MiniLM), cached on disk."""
    return embed_cached(corpus.texts, corpus.name, model)


class Timer:
    """Wall-clock and process CPU seconds of a ``with timer() as t:`` block.

    CPU seconds (all threads of this process) move less than wall-clock time when other
    processes share the cores, so tables show both.
    """

    seconds: float = float("nan")
    cpu: float = float("nan")


@contextmanager
def timer() -> Iterator[Timer]:
    t = Timer()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start
        t.cpu = time.process_time() - cpu


def timed(fn: Callable[[], object]) -> tuple[object, Timer]:
    """``fn()``'s result and its timer (``.seconds`` wall clock, ``.cpu`` process CPU)."""
    with timer() as t:
        out = fn()
    return out, t


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux), NaN elsewhere."""
    return _status_mb("VmRSS")


def _descendants(pid: str = "self") -> list[str]:
    """Pids of this process's children, their children and so on (Linux)."""
    out = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in children.read_text().split():
                out += [child, *_descendants(child)]
        except OSError:  # the process or thread ended meanwhile
            continue
    return out


def children_private_mb() -> tuple[float, float]:
    """Memory this process's descendants hold on their own, MiB: ``(private, private dirty)``.
    A forked worker shares the rest with its parent, whose resident set counts it already; its
    clean private pages are mostly file pages it read, which the kernel can drop."""
    clean = dirty = 0
    for pid in _descendants():
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Private_Clean:"):
                    clean += int(line.split()[1])
                elif line.startswith("Private_Dirty:"):
                    dirty += int(line.split()[1])
        except OSError:
            continue
    return (clean + dirty) / 1024, dirty / 1024


class RssSampler:
    """Samples this process's memory every ``interval`` seconds on a daemon thread.

    Each sample is ``(unix time, resident MiB, anonymous resident MiB)``, with the private (and
    private dirty) memory of the process's forked workers added (``children_private_mb``). The
    resident set counts the pages of memory-mapped files that were read, which the kernel can
    drop under pressure; the anonymous part is what the process itself holds.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            private, dirty = children_private_mb()
            self.samples.append((time.time(), rss_mb() + private, _status_mb("RssAnon") + dirty))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mb(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, float]:
        """The highest ``(resident, anonymous)`` MiB sampled between Unix times ``start`` and
        ``end`` (NaN when no sample fell there)."""
        window = [(rss, anon) for t, rss, anon in self.samples if start <= t <= end]
        if not window:
            return float("nan"), float("nan")
        return max(w[0] for w in window), max(w[1] for w in window)


def machine() -> str:
    """One line about the machine and how busy it is (timings on a loaded machine are noisy)."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()},"
        f" load average {load}"
    )


def loopback_cluster(workers: int):
    """A ``distributed.LocalCluster`` of single-thread worker processes on 127.0.0.1 (one
    BLAS thread each, so a process per core), its dashboard on loopback only."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned text table (floats to 3 significant decimals)."""

    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(flush=True)


def result_line(stage: str, figure: str, ratio: float, target: str, quality: str) -> str:
    """The last line every benchmark prints, which ``make bench`` and the README collect."""
    line = f"{stage}: {figure} ratio={ratio:.2f} target={target} quality={quality}"
    print(line, flush=True)
    return line


# The assets of one map build, in run order (topics stands for its multi-asset).
MAP_STAGES = ("dataset", "latent", "knn_graph", "projected", "topics", "duplicates", "tags")


def stage_windows(assets: Sequence[str] = MAP_STAGES) -> dict[str, tuple[float, float]]:
    """``(start, end)`` Unix times of each asset's latest materialization in the current Dagster
    instance (``DAGSTER_HOME``): it ends at the event's time and lasted its ``seconds`` metadata."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        out = {}
        for key in assets:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            seconds = event.asset_materialization.metadata["seconds"].value
            out[key] = (event.timestamp - seconds, event.timestamp)
        return out


def stage_seconds(assets: Sequence[str] = MAP_STAGES) -> dict[str, float]:
    """Seconds each asset's latest materialization took (see ``stage_windows``)."""
    return {key: end - start for key, (start, end) in stage_windows(assets).items()}
