"""A refresh: first build versus a rebuild after adding 1% new rows, through Dagster; and how
much of the map a refresh keeps, against a from-scratch rebuild of the same data.

    python -m benchmarks.refresh [--quick] [--n N] [--stability-n M]

Time: both builds run ``create_index`` (a real Dagster run) in a fresh store; the refresh embeds
only the new rows (embedding cache) and recomputes the rest.

Stability: a map of ``M`` real texts (default 10,000: AG News, the arXiv sample and BBC News,
shuffled; ``--quick``: 300 arXiv abstracts), then 10% more rows, mapped twice through the
functions the assets run (``knn_graph``, ``project``, ``build_topic_tree`` with the model's label
re-ranking): once carrying the first build over (as a rebuild does) and once from scratch (as
``--fresh``). For each: the share of old datums whose depth-1 / depth-2 topic id and label are
unchanged, the share of labels kept among the old topics whose members barely changed (a new
topic with Jaccard >= 0.8 over the old rows), the median movement of old points as a fraction of
the old map's width, and topic quality (NMI of depths 1 and 2 against the corpus labels).

Last line: ``refresh: <seconds> ratio=<refresh/first> target=<=0.5 quality=<...>`` with the
stability figures of the carried-over rebuild, then the from-scratch one's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "arxiv_2007_sample.csv.gz"
GROWTH = 0.10  # the share of new rows in the stability run
BARELY_CHANGED = 0.8  # Jaccard over the old rows of an old topic and its best new match


def timing(n: int) -> tuple[float, float, int]:
    """Seconds of a first build of ``n`` arXiv rows and of a rebuild with 1% more, through
    Dagster; and the number of rows added."""
    extra = max(1, n // 100)
    frame = pd.read_csv(SAMPLE, dtype={"arxiv_id": str}).head(n + extra)
    with tempfile.TemporaryDirectory() as home:
        os.environ["ATLAS_HOME"] = home
        os.environ["DAGSTER_HOME"] = str(Path(home) / ".dagster")
        from atlas_assets import AtlasDataset

        ds = AtlasDataset("refresh-bench", unique_id_field="arxiv_id")
        ds.add_data(frame.head(n))
        start = time.perf_counter()
        ds.create_index(indexed_field="abstract")
        first = time.perf_counter() - start

        ds.add_data(frame.iloc[n:])
        start = time.perf_counter()
        atlas_map = ds.create_index()
        refresh = time.perf_counter() - start
        assert atlas_map.data.tb.num_rows == n + extra
    return first, refresh, extra


def stability_corpus(quick: bool, total: int):
    """Texts with a label each, shuffled (seed 0): the first ``total`` of the arXiv sample with
    ``quick``, else AG News, the arXiv sample and BBC News where ``../shared/datasets`` has
    them."""
    from benchmarks import common
    from benchmarks.common import DATASETS, Corpus

    parts = [common.arxiv(total if quick else None)]
    if not quick:
        parts.append(common.ag_news())
        path = DATASETS / "bbc_news" / "bbc_news.csv.gz"
        if path.exists():
            df = pd.read_csv(path)
            texts = (df.title.fillna("") + ". " + df.text.fillna("")).tolist()
            parts.append(Corpus("bbc", texts, df.category.astype(str).to_numpy()))
        else:
            common.skip("BBC News", f"{path} not found")
    parts = [p for p in parts if p is not None]
    vectors = np.vstack([common.embeddings(p) for p in parts])
    texts = [t for p in parts for t in p.texts]
    labels = np.concatenate([[f"{p.name}/{label}" for label in p.labels] for p in parts])
    order = np.random.default_rng(0).permutation(len(texts))
    return vectors[order], [texts[i] for i in order], labels[order]


def _map(latent, texts, ids, prior=None, old=None):
    """Coordinates and topics as the assets build them, carrying ``prior``/``old`` over."""
    from atlas_assets.lib.knn import knn_graph
    from atlas_assets.lib.project import project
    from atlas_assets.lib.refresh import aligned_coords
    from atlas_assets.lib.topics import build_topic_tree
    from benchmarks.topics import encode_phrases

    knn = knn_graph(latent, 30)
    initial = None if old is None else aligned_coords(old[0], old[1], ids)
    coords = project(latent, knn, initial=initial)
    carry = None if prior is None else prior.aligned(ids)
    tree = build_topic_tree(latent, knn, coords, texts, encode=encode_phrases, previous=carry)
    return coords, tree


def _prior(ids, tree):
    """The build as the next one reads it back: from its published tables."""
    from atlas_assets.lib.refresh import PriorTopics
    from atlas_assets.lib.topic_tables import datum_labels, hierarchy_table

    per_datum = pd.DataFrame(
        {"id": ids, **{k: v.to_pylist() for k, v in datum_labels(tree).items()}}
    )
    return PriorTopics.from_tables(per_datum, hierarchy_table(tree).to_pandas())


def _labels_of(tree, depth):
    label = dict(zip(tree.topics.topic_id, tree.topics.label, strict=True))
    return [label[t] for t in tree.assignments[:, depth - 1]]


def _labels_kept(old_tree, tree, n_old: int, depth: int) -> tuple[float, int]:
    """Among old topics of ``depth`` whose members barely changed (their best new topic over
    the old rows has Jaccard >= ``BARELY_CHANGED``), the share whose best match has their label;
    and how many such topics there were."""
    old = old_tree.assignments[:, depth - 1]
    new = tree.assignments[:n_old, depth - 1]  # the old rows come first, in the same order
    old_label = dict(zip(old_tree.topics.topic_id, old_tree.topics.label, strict=True))
    new_label = dict(zip(tree.topics.topic_id, tree.topics.label, strict=True))
    pairs = pd.crosstab(old, new)
    sizes_old, sizes_new = pairs.sum(axis=1), pairs.sum(axis=0)
    stable = kept = 0
    for b in pairs.index:
        a = pairs.loc[b].idxmax()
        inter = pairs.loc[b, a]
        if inter / (sizes_old[b] + sizes_new[a] - inter) >= BARELY_CHANGED:
            stable += 1
            kept += int(new_label[a] == old_label[b])
    return (kept / stable if stable else float("nan")), stable


def stability(n: int, quick: bool) -> dict[str, dict[str, float]]:
    """The stability figures of a carried-over rebuild and a from-scratch one (see the module's
    docstring), with the seconds each took."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from atlas_assets.lib.refresh import kept_share, movement

    latent, texts, labels = stability_corpus(quick, int(round(n * (1 + GROWTH))))
    total = min(len(texts), int(round(n * (1 + GROWTH))))
    n = min(n, total - max(1, int(round(total * GROWTH / (1 + GROWTH)))))
    ids = np.array([f"r{i}" for i in range(total)])
    print(f"stability: {n} rows, then {total - n} added ({len(set(labels[:total]))} labels)")
    start = time.perf_counter()
    coords1, tree1 = _map(latent[:n], texts[:n], ids[:n])
    first = time.perf_counter() - start
    prior = _prior(ids[:n], tree1)
    out: dict[str, dict[str, float]] = {}
    for name, carry in (("carried", True), ("scratch", False)):
        start = time.perf_counter()
        coords, tree = _map(
            latent[:total],
            texts[:total],
            ids[:total],
            prior if carry else None,
            (ids[:n], coords1) if carry else None,
        )
        seconds = time.perf_counter() - start
        row: dict[str, float] = {"seconds": seconds, "first_seconds": first}
        for d in (1, 2):
            row[f"kept{d}"] = kept_share(
                ids[:n],
                tree1.assignments[:, d - 1],
                _labels_of(tree1, d),
                ids[:total],
                tree.assignments[:, d - 1],
                _labels_of(tree, d),
            )
            row[f"labels{d}"], row[f"stable{d}"] = _labels_kept(tree1, tree, n, d)
            row[f"nmi{d}"] = float(nmi(labels[:total], tree.assignments[:, d - 1]))
        row["moved"] = movement(ids[:n], coords1, ids[:total], coords)
        if tree.changes:
            for d in (1, 2):
                c = tree.changes[f"depth {d}"]
                row[f"changes{d}"] = "/".join(
                    str(c[k]) for k in ("kept", "split", "merged", "new", "gone")
                )
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 rows instead of 1,500 / 10,000")
    parser.add_argument("--n", type=int, help="rows in the first build of the timing run")
    parser.add_argument(
        "--stability-n", type=int, help="rows in the first build of the stability run"
    )
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 1500)
    first, refresh, extra = timing(n)
    figures = stability(args.stability_n or (300 if args.quick else 10_000), args.quick)

    ratio = refresh / first
    print(f"{'build':<10}{'rows':>8}{'seconds':>10}")
    print(f"{'first':<10}{n:>8}{first:>10.1f}")
    print(f"{'refresh':<10}{n + extra:>8}{refresh:>10.1f}   (+{extra} new rows)")
    print()
    keys = ["kept1", "kept2", "labels1", "labels2", "moved", "nmi1", "nmi2", "seconds"]
    goals = [
        ">= 0.95",
        ">= 0.95",
        ">= 0.9",
        ">= 0.9",
        "<= 0.02",
        "scratch - 0.01",
        "scratch - 0.01",
        "",
    ]
    print(f"{'figure':<10}{'carried':>10}{'scratch':>10}   goal")
    for key, goal in zip(keys, goals, strict=True):
        c, s = figures["carried"][key], figures["scratch"][key]
        print(f"{key:<10}{c:>10.3f}{s:>10.3f}   {goal}")
    for d in (1, 2):
        print(
            f"depth {d}: kept/split/merged/new/gone {figures['carried'].get(f'changes{d}')}, "
            f"{int(figures['carried'][f'stable{d}'])} old topics barely changed "
            f"({int(figures['scratch'][f'stable{d}'])} from scratch)"
        )

    def summary(row: dict[str, float]) -> str:
        return (
            f"kept1={row['kept1']:.3f},kept2={row['kept2']:.3f},labels1={row['labels1']:.2f},"
            f"labels2={row['labels2']:.2f},moved={row['moved']:.4f},"
            f"nmi1={row['nmi1']:.3f},nmi2={row['nmi2']:.3f}"
        )

    line = (
        f"refresh: {refresh:.1f}s ratio={ratio:.2f} target=<=0.5 "
        f"quality=first {first:.1f}s, {extra} new rows embedded; "
        f"carried {summary(figures['carried'])}; scratch {summary(figures['scratch'])}"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
