"""Benchmark of the topic tree (``atlas_assets.lib.topics``) on real labelled corpora.

Run ``python -m benchmarks.topics [--quick]``. For each corpus found under
``../shared/datasets`` (skipped cleanly when absent) it reports, per depth:

* NMI between the depth's topics and the matching label level, next to k-means on the latent
  vectors given the true number of classes (the baseline is told the number, we are not);
* keyword coherence (NPMI, reference set = the corpus documents, window = whole document) and
  topic diversity (share of unique words among all topics' top-10 keywords);
* map coherence: the share of each point's 15 nearest 2-D map neighbours in the same topic.

Every depth is complete (a topic that does not split carries on), so each is compared as is.

Embeddings go through the benchmarks' embedding cache; UMAP coordinates are cached under
``data/bench-cache/topics``. ``--quick`` skips AG News and uses PCA instead of UMAP for the 2-D
coordinates.

It compares the clustering routes (``"fast"`` with Leiden, the default; ``"fast"`` with
Louvain, its predecessor; ``"hdbscan"``: NMI, noise share, seconds) and the labels: **label
retrieval accuracy** (each label embedded with the map's model; the share of topics whose own
centroid is the nearest among their siblings') for our phrase labels with and without the
centroid re-rank, the former 3-keyword labels and BERTopic's default c-TF-IDF labels of the same
topics.

The last line reads ``topics: <figure> ratio=<ours/kmeans depth-2 NMI on arXiv archives>
target=>=1.0 quality=<npmi, diversity of BBC depth-2 keywords, label retrieval accuracy among
all topics of a depth, ours vs BERTopic's, averaged over the corpora>``; BERTopic with MiniLM on
BBC News published NPMI 0.170 and diversity 0.802.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atlas_assets.lib.knn import KnnGraph, knn_graph
from atlas_assets.lib.topics import TopicTree, build_topic_tree
from benchmarks import common

DATASETS = common.DATASETS
CACHE = common.DEFAULT_CACHE / "topics"  # git-ignored, beside the other benchmarks'
K = 30  # the pipeline's knn_graph asset uses max(30, n_neighbors - 1) neighbours


@dataclass
class Corpus:
    name: str
    texts: list[str]
    # label level name -> labels; the i-th level is compared with depth i + 1
    levels: dict[str, np.ndarray]


def load_corpora(quick: bool) -> list[Corpus]:
    """The labelled corpora present on disk."""
    out = []
    p = DATASETS / "arxiv_2007_sample/arxiv_0704_first2000.csv.gz"
    if p.exists():
        df = pd.read_csv(p)
        texts = (df.title.fillna("") + ". " + df.abstract.fillna("")).tolist()
        levels = {c: df[c].astype(str).to_numpy() for c in ("group", "archive", "primary_category")}
        out.append(Corpus("arxiv", texts, levels))
    p = DATASETS / "bbc_news/bbc_news.csv.gz"
    if p.exists():
        df = pd.read_csv(p)
        texts = (df.title.fillna("") + ". " + df.text.fillna("")).tolist()
        out.append(Corpus("bbc", texts, {"category": df.category.astype(str).to_numpy()}))
    p = DATASETS / "ag_news_test/ag_news_test.csv.gz"
    if p.exists() and not quick:
        df = pd.read_csv(p)
        labels = df.label_name.astype(str).to_numpy()
        out.append(Corpus("agnews", df.text.fillna("").tolist(), {"label": labels}))
    return out


def _key(name: str, texts: list[str]) -> str:
    return f"{name}-{hashlib.sha256(chr(0).join(texts).encode()).hexdigest()[:12]}"


def embeddings(corpus: Corpus) -> np.ndarray:
    """MiniLM embeddings of the corpus, through the benchmarks' embedding cache (embedding
    runs at ~20-90 texts/s)."""
    return common.embeddings(corpus)


def map_coords(corpus: Corpus, latent: np.ndarray, knn: KnnGraph, quick: bool) -> np.ndarray:
    """2-D coordinates: UMAP over the precomputed kNN graph (cached), or PCA with --quick."""
    if quick:
        centred = latent - latent.mean(axis=0)
        return (centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T).astype(np.float32)
    path = CACHE / f"{_key(corpus.name, corpus.texts)}-umap.npy"
    if path.exists():
        return np.load(path)
    import umap

    k = 15
    idx = np.concatenate([np.arange(len(latent))[:, None], knn.indices[:, : k - 1]], axis=1)
    dist = np.concatenate([np.zeros((len(latent), 1), np.float32), knn.distances[:, : k - 1]], 1)
    reducer = umap.UMAP(
        n_neighbors=k, metric="cosine", random_state=0, precomputed_knn=(idx, dist, None)
    )
    coords = reducer.fit_transform(latent).astype(np.float32)
    np.save(path, coords)
    return coords


def npmi_and_diversity(keywords: list[list[str]], texts: list[str]) -> tuple[float, float]:
    """Mean pairwise NPMI of each topic's top-10 words over documents, and topic diversity.

    A pair that never co-occurs scores -1 (the limit of NPMI); words absent from the reference
    vocabulary are skipped.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    keywords = [k[:10] for k in keywords if k]
    if not keywords:
        return float("nan"), float("nan")
    vocab = sorted({w.lower() for k in keywords for w in k})
    vec = CountVectorizer(
        vocabulary=vocab, lowercase=True, token_pattern=r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b"
    )
    B = (vec.transform(texts) > 0).astype(np.float64).tocsc()
    n = B.shape[0]
    p = np.asarray(B.sum(axis=0)).ravel() / n
    joint = (B.T @ B).toarray() / n
    col = {w: i for i, w in enumerate(vocab)}
    scores = []
    for k in keywords:
        ids = [col[w.lower()] for w in k]
        pair = []
        for i, j in itertools.combinations(ids, 2):
            pij = joint[i, j]
            if p[i] == 0 or p[j] == 0:
                continue
            if pij == 0:
                pair.append(-1.0)
            elif pij == 1.0:
                pair.append(1.0)
            else:
                pair.append(np.log(pij / (p[i] * p[j])) / -np.log(pij))
        if pair:
            scores.append(float(np.mean(pair)))
    diversity = len({w.lower() for k in keywords for w in k}) / sum(len(k) for k in keywords)
    return float(np.mean(scores)), float(diversity)


def map_coherence(coords: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Mean share of each point's ``k`` nearest map neighbours that share its topic."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(coords)
    idx = nn.kneighbors(coords, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean())


def kmeans_labels(latent: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(latent)


def encode_phrases(phrases: list[str]) -> np.ndarray:
    """Labels and label candidates embedded with the map's model (the bundled MiniLM)."""
    from atlas_assets.lib.embed import embed_texts

    return embed_texts(phrases)


def label_retrieval_accuracy(
    tree: TopicTree,
    latent: np.ndarray,
    labels: dict[int, str],
    encode=encode_phrases,
    among: str = "siblings",
) -> tuple[float, int]:
    """Share of topics whose label, embedded with the map's model, is nearer (cosine) to the
    topic's own centroid than to any sibling's (``among="depth"``: than to any other topic's of
    its depth, which is harder); and how many topics were scored.

    Only topics with at least one rival count (a topic that does not split has one child).
    """
    t = tree.topics
    scored = correct = 0
    vectors = encode([labels[int(i)] for i in t.topic_id])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row_of = {int(tid): i for i, tid in enumerate(t.topic_id)}
    scope = "parent_id" if among == "siblings" else "whole_depth"
    for (depth, _), group in t.assign(whole_depth=0).groupby(["depth", scope]):
        if len(group) < 2:
            continue
        col = tree.assignments[:, depth - 1]
        cents = np.vstack([latent[col == tid].mean(axis=0) for tid in group.topic_id])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        sims = vectors[[row_of[int(i)] for i in group.topic_id]] @ cents.T
        correct += int((sims.argmax(axis=1) == np.arange(len(group))).sum())
        scored += len(group)
    return correct / max(scored, 1), scored


def bertopic_labels(tree: TopicTree, texts: list[str]) -> dict[int, str]:
    """BERTopic's default labels for the same topics: the 4 best c-TF-IDF words of each topic
    against all topics of its depth (BERTopic's ``ClassTfidfTransformer`` defaults: L1-normed
    term frequency times ``log(1 + A / f(t))``), with English stop words removed as BERTopic's
    documentation advises (its bare default keeps them). Joined by spaces, without the number
    BERTopic puts first, so the words alone are embedded."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(stop_words="english")
    X = vec.fit_transform(texts).tocsr()
    vocab = vec.get_feature_names_out()
    out = {}
    for _, group in tree.topics.groupby("depth"):
        depth = int(group.depth.iloc[0])
        col = tree.assignments[:, depth - 1]
        counts = np.vstack(
            [np.asarray(X[col == tid].sum(axis=0)).ravel() for tid in group.topic_id]
        )
        tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        idf = np.log(counts.sum() / len(group) / np.maximum(counts.sum(axis=0), 1) + 1)
        for tid, row in zip(group.topic_id, tf * idf, strict=True):
            out[int(tid)] = " ".join(vocab[np.argsort(-row, kind="stable")[:4]])
    return out


METHODS = [("fast", "leiden"), ("fast", "louvain"), ("hdbscan", "leiden")]
SEEDS = 3


def evaluate(corpus: Corpus, quick: bool) -> tuple[list[dict], list[dict], TopicTree]:
    """Per method and depth: NMI (ours and k-means), noise share and seconds; per labeller:
    label retrieval accuracy; keyword quality and map coherence of the default tree."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from atlas_assets.lib.topics import keyword_labeller

    latent = embeddings(corpus)
    knn = knn_graph(latent, K)
    coords = map_coords(corpus, latent, knn, quick)
    level_names = list(corpus.levels)
    kmeans = {}
    rows = []
    for method, community in METHODS:
        name = method if method == "hdbscan" else f"fast ({community})"
        # Graph communities move with the seed by about 0.01 NMI: the fast routes are averaged
        # over SEEDS seeds (hdbscan, slower, runs once).
        seeds = range(1 if method == "hdbscan" else SEEDS)
        per_seed = []
        t0 = time.perf_counter()
        for seed in seeds:
            per_seed.append(
                build_topic_tree(
                    latent,
                    knn,
                    coords,
                    corpus.texts,
                    seed=seed,
                    cluster_method=method,
                    community=community,
                )
            )
        seconds = (time.perf_counter() - t0) / len(seeds)
        for depth in range(1, per_seed[0].depth + 1):
            level = level_names[min(depth - 1, len(level_names) - 1)]
            truth = corpus.levels[level]
            n_true = len(np.unique(truth))
            if level not in kmeans:
                kmeans[level] = nmi(truth, kmeans_labels(latent, n_true))
            trees = [tree for tree in per_seed if tree.depth >= depth]
            rows.append(
                {
                    "corpus": corpus.name,
                    "N": len(corpus.texts),
                    "method": name,
                    "depth": depth,
                    "topics": np.mean([(tree.topics.depth == depth).sum() for tree in trees]),
                    "level": level,
                    "classes": n_true,
                    "nmi": np.mean([nmi(truth, tree.assignments[:, depth - 1]) for tree in trees]),
                    "kmeans_nmi": kmeans[level],
                    "noise": np.mean([tree.noise for tree in trees]) / len(corpus.texts),
                    "seconds": seconds,
                }
            )
    t0 = time.perf_counter()
    tree = build_topic_tree(latent, knn, coords, corpus.texts, seed=0, encode=encode_phrases)
    seconds = time.perf_counter() - t0
    plain = build_topic_tree(latent, knn, coords, corpus.texts, seed=0)
    keywords = {int(t.topic_id): keyword_labeller(t.keywords, []) for t in tree.topics.itertuples()}
    labellers = {
        "ours (phrases, re-ranked)": dict(
            zip(tree.topics.topic_id, tree.topics.label, strict=True)
        ),
        "ours without re-rank": dict(zip(plain.topics.topic_id, plain.topics.label, strict=True)),
        "3 keywords (before)": keywords,
        "BERTopic default (4 words)": bertopic_labels(tree, corpus.texts),
    }
    at2 = tree.topics[tree.topics.depth == min(2, tree.depth)]
    npmi, div = npmi_and_diversity(list(at2.keywords), corpus.texts)
    coherence = map_coherence(coords, tree.assignments[:, 0])
    labels = []
    for name, mapping in labellers.items():
        acc, scored = label_retrieval_accuracy(tree, latent, mapping)
        acc_depth, _ = label_retrieval_accuracy(tree, latent, mapping, among="depth")
        labels.append(
            {
                "corpus": corpus.name,
                "labels": name,
                "retrieval_acc": acc,
                "acc_among_depth": acc_depth,
                "topics_scored": scored,
                "depth2_npmi": npmi,
                "depth2_diversity": div,
                "depth1_map_coh": coherence,
                "seconds": seconds if name.startswith("ours (") else float("nan"),
            }
        )
    return rows, labels, tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip AG News; PCA instead of UMAP")
    args = parser.parse_args(argv)
    corpora = load_corpora(args.quick)
    if not corpora:
        print("topics: skipped (no datasets under ../shared/datasets)")
        return 0
    rows, label_rows = [], []
    trees = {}
    for corpus in corpora:
        print(f"{corpus.name}: {len(corpus.texts)} texts", flush=True)
        r, lab, trees[corpus.name] = evaluate(corpus, args.quick)
        rows.extend(r)
        label_rows.extend(lab)
    table = pd.DataFrame(rows)
    labels = pd.DataFrame(label_rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print()
        print(labels.round(3).to_string(index=False))
    for name, tree in trees.items():
        print(f"\n{name} depth-1 topics:")
        for _, t in tree.topics[tree.topics.depth == 1].iterrows():
            print(f"  {t['size']:5d}  {t.label:32s} {'/'.join(t.keywords)}")

    default = table[table.method == "fast (leiden)"]
    arxiv = default[(default.corpus == "arxiv") & (default.depth == 2)]
    ratio = float(arxiv.nmi.iloc[0] / arxiv.kmeans_nmi.iloc[0]) if len(arxiv) else float("nan")
    figure = float(arxiv.nmi.iloc[0]) if len(arxiv) else float("nan")
    bbc = labels[labels.corpus == "bbc"]
    npmi = float(bbc.depth2_npmi.iloc[0]) if len(bbc) else float("nan")
    div = float(bbc.depth2_diversity.iloc[0]) if len(bbc) else float("nan")
    acc = labels.groupby("labels").acc_among_depth.mean()
    line = (
        f"topics: arxiv_depth2_nmi={figure:.3f} ratio={ratio:.3f} target=>=1.0 "
        f"quality=<npmi={npmi:.3f}, diversity={div:.3f}, "
        f"label_acc_depth={acc.get('ours (phrases, re-ranked)', float('nan')):.3f} "
        f"vs_bertopic={acc.get('BERTopic default (4 words)', float('nan')):.3f}>"
    )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
