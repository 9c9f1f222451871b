"""The topic tree on real texts: 200 abstracts of the bundled arXiv sample, embedded with the
bundled MiniLM. Floors were measured on this data with a margin (see each test)."""

from __future__ import annotations

import re

import pytest

from atlas_assets.lib.knn import knn_graph
from atlas_assets.lib.topics import GENERIC_WORDS, build_topic_tree
from atlas_assets_tests.lib.test_topics import check_invariants

N = 200


@pytest.fixture(scope="module")
def sample(arxiv):
    from atlas_assets.lib.embed import embed_texts

    frame = arxiv.head(N)
    texts = frame["abstract"].fillna("").tolist()
    latent = embed_texts(texts)
    return frame, texts, latent, knn_graph(latent, 30)


@pytest.fixture(scope="module")
def fast(sample):
    from benchmarks.topics import encode_phrases

    _, texts, latent, knn = sample
    return build_topic_tree(latent, knn, latent[:, :2], texts, encode=encode_phrases)


def nmi(a, b) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))


def test_fast_tree_recovers_arxiv_groups_and_archives(sample, fast):
    frame = sample[0]
    check_invariants(fast, N)
    assert fast.noise == 0
    # measured: 0.37 (group, depth 1), 0.41 (archive, depth 2), 0.50 (category, depth 3)
    assert nmi(frame["group"], fast.assignments[:, 0]) > 0.3
    assert nmi(frame["archive"], fast.assignments[:, 1]) > 0.33
    assert nmi(frame["primary_category"], fast.assignments[:, -1]) > 0.42


def test_labels_read_like_names_and_retrieve_their_topic(sample, fast):
    from benchmarks.topics import bertopic_labels, label_retrieval_accuracy

    _, texts, latent, _ = sample
    stop = {"we", "the", "of", "and", "a", "in", "for", *GENERIC_WORDS}
    for label in fast.topics.label:
        phrases = re.sub(r" \(\d+\)$", "", label).split(" & ")
        assert 1 <= len(phrases) <= 2, label
        for phrase in phrases:
            words = phrase.split(" ")
            assert 1 <= len(words) <= 3, label
            assert not stop & {w.lower() for w in words}, label
            assert words[0][:1].isupper(), label
        assert not re.search(r"[$\\{}^_]", label), label  # no formula tokens
    ours = dict(zip(fast.topics.topic_id, fast.topics.label, strict=True))
    theirs = bertopic_labels(fast, texts)  # BERTopic's 4 c-TF-IDF words, same topics
    acc, scored = label_retrieval_accuracy(fast, latent, ours)
    assert scored >= 5 and acc >= 0.8
    acc, _ = label_retrieval_accuracy(fast, latent, ours, among="depth")
    base, _ = label_retrieval_accuracy(fast, latent, theirs, among="depth")
    assert acc >= 0.75 and acc >= base - 0.05


def test_hdbscan_route_on_real_texts(sample):
    frame, texts, latent, knn = sample
    tree = build_topic_tree(latent, knn, latent[:, :2], texts, cluster_method="hdbscan")
    check_invariants(tree, N)
    # HDBSCAN leaves some abstracts as noise; each is assigned to a topic and counted
    assert 0 < tree.noise < N // 2
    assert nmi(frame["archive"], tree.assignments[:, 1]) > 0.33  # measured: 0.42, 30 noise
