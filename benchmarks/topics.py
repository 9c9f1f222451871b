"""Benchmark of the topic tree (``atlas_assets.lib.topics``) on real labelled corpora.

Run ``python -m benchmarks.topics [--quick]``. For each corpus found under
``../shared/datasets`` (skipped cleanly when absent) it reports, per depth:

* NMI between the depth's topics and the matching label level, next to k-means on the latent
  vectors given the true number of classes (the baseline is told the number, we are not);
* keyword coherence (NPMI, reference set = the corpus documents, window = whole document) and
  topic diversity (share of unique words among all topics' top-10 keywords);
* map coherence: the share of each point's 15 nearest 2-D map neighbours in the same topic.

Embeddings and UMAP coordinates are cached under ``data/bench-cache/topics``. ``--quick``
skips AG News and uses PCA instead of UMAP for the 2-D coordinates.

The last line reads ``topics: <figure> ratio=<ours/kmeans depth-2 NMI on arXiv archives>
target=>=1.0 quality=<npmi, diversity of BBC depth-2 keywords>``; BERTopic with MiniLM on BBC
News published NPMI 0.170 and diversity 0.802.
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
    """MiniLM embeddings of the corpus, cached on disk (embedding runs at ~20-90 texts/s)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{_key(corpus.name, corpus.texts)}.npy"
    if path.exists():
        return np.load(path)
    from atlas_assets.lib.embed import embed_texts

    print(f"  embedding {len(corpus.texts)} texts (cached afterwards) ...", flush=True)
    vecs = embed_texts(corpus.texts)
    np.save(path, vecs)
    return vecs


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


def evaluate(corpus: Corpus, quick: bool) -> tuple[list[dict], TopicTree]:
    """One row per depth with NMI (ours and k-means), keyword quality and map coherence."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    latent = embeddings(corpus)
    knn = knn_graph(latent, K)
    coords = map_coords(corpus, latent, knn, quick)
    t0 = time.perf_counter()
    tree = build_topic_tree(latent, knn, coords, corpus.texts, seed=0, max_depth=3)
    seconds = time.perf_counter() - t0
    level_names = list(corpus.levels)
    rows = []
    for depth in range(1, tree.depth + 1):
        # Rows whose topic has no subtopics keep their parent's topic at this depth.
        col = tree.assignments[:, depth - 1].copy()
        for d in range(depth - 2, -1, -1):
            col = np.where(col < 0, tree.assignments[:, d], col)
        at = tree.topics[tree.topics.depth == depth]
        level = level_names[min(depth - 1, len(level_names) - 1)]
        truth = corpus.levels[level]
        n_true = len(np.unique(truth))
        km = kmeans_labels(latent, n_true)
        npmi, div = npmi_and_diversity(list(at.keywords), corpus.texts)
        rows.append(
            {
                "corpus": corpus.name,
                "N": len(corpus.texts),
                "depth": depth,
                "topics": len(at),
                "level": level,
                "classes": n_true,
                "nmi": nmi(truth, col),
                "kmeans_nmi": nmi(truth, km),
                "npmi": npmi,
                "diversity": div,
                "map_coh": map_coherence(coords, col),
                "seconds": seconds,
            }
        )
    return rows, tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip AG News; PCA instead of UMAP")
    args = parser.parse_args(argv)
    corpora = load_corpora(args.quick)
    if not corpora:
        print("topics: skipped (no datasets under ../shared/datasets)")
        return 0
    rows = []
    trees = {}
    for corpus in corpora:
        print(f"{corpus.name}: {len(corpus.texts)} texts", flush=True)
        r, trees[corpus.name] = evaluate(corpus, args.quick)
        rows.extend(r)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    for name, tree in trees.items():
        print(f"\n{name} depth-1 topics:")
        for _, t in tree.topics[tree.topics.depth == 1].iterrows():
            print(f"  {t['size']:5d}  {t.label:40s} {'/'.join(t.keywords)}")

    arxiv = table[(table.corpus == "arxiv") & (table.depth == 2)]
    bbc = table[(table.corpus == "bbc") & (table.depth == 2)]
    ratio = float(arxiv.nmi.iloc[0] / arxiv.kmeans_nmi.iloc[0]) if len(arxiv) else float("nan")
    figure = float(arxiv.nmi.iloc[0]) if len(arxiv) else float("nan")
    npmi = float(bbc.npmi.iloc[0]) if len(bbc) else float("nan")
    div = float(bbc.diversity.iloc[0]) if len(bbc) else float("nan")
    print(
        f"topics: arxiv_depth2_nmi={figure:.3f} ratio={ratio:.3f} target=>=1.0 "
        f"quality=<npmi={npmi:.3f}, diversity={div:.3f}>"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
