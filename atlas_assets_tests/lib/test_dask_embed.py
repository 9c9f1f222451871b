"""Embedding as Dask tasks on a real two-worker cluster on loopback: shards, order, cancelling."""

from __future__ import annotations

import time

import numpy as np
import pytest

from atlas_assets.lib import dask_embed
from atlas_assets.lib.embed import embed_texts


def test_shards_cut_where_the_in_process_batches_are():
    # 60 texts, batches of 8 from the top of one encode call: the shards are those batches
    bounds = dask_embed.plan_shards(60, 8, 8)
    assert bounds[0] == (0, 4) and bounds[-1] == (52, 60)
    assert all(hi - lo == 8 for lo, hi in bounds[1:])
    # whole calls (32 batches of 32) per shard when shards are larger; sizes rounded up
    assert dask_embed.plan_shards(3000, 1500, 32) == [(0, 2048), (2048, 3000)]
    assert dask_embed.plan_shards(2100, 100, 32)[:2] == [(0, 128), (128, 256)]
    for n, size, batch in [(1, 1, 1), (1000, 7, 3), (5000, 300, 32), (0, 5, 5)]:
        bounds = dask_embed.plan_shards(n, size, batch)
        covered = [i for lo, hi in bounds for i in range(lo, hi)]
        assert covered == list(range(n))  # every text once, in order
    with pytest.raises(ValueError, match="shard_size"):
        dask_embed.plan_shards(10, 0, 8)


def test_vectors_equal_the_in_process_ones_and_the_model_loads_once_per_worker(dask_cluster, arxiv):
    texts = arxiv["title"].head(40).tolist()
    texts += texts[:5]  # identical texts are embedded once and land on every row
    seen = []
    with dask_embed.connect(dask_cluster.scheduler_address) as client:
        vectors = dask_embed.embed_on_cluster(
            client,
            texts,
            "all-MiniLM-L6-v2",
            batch_size=4,
            shard_size=4,
            progress=lambda *args: seen.append(args),
        )
        loads = client.run(
            lambda: __import__("atlas_assets.lib.embed").lib.embed._load_model.cache_info().misses
        )
        link = dask_embed.dashboard_link(client)
    expected = embed_texts(texts, batch_size=4)
    assert vectors.shape == expected.shape == (45, 384) and vectors.dtype == np.float32
    cosines = np.einsum("ij,ij->i", vectors, expected)
    assert cosines.min() >= 0.9999995  # min cosine 1.000000
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [s[:3] for s in seen][-1] == (10, 10, 40)  # 40 distinct titles in 10 shards
    assert [s[0] for s in seen] == list(range(1, 11))
    assert set(loads.values()) <= {0, 1}  # each worker process loaded the model at most once
    assert link and link.startswith("http://127.0.0.1:")


def test_an_interrupted_embedding_cancels_its_tasks(dask_cluster, arxiv):
    texts = arxiv["abstract"].head(24).tolist()

    def interrupt(done, total, texts_done, seconds):
        raise KeyboardInterrupt  # as a cancelled Dagster run interrupts the step

    with dask_embed.connect(dask_cluster.scheduler_address) as client:
        with pytest.raises(KeyboardInterrupt):
            dask_embed.embed_on_cluster(
                client,
                texts,
                "all-MiniLM-L6-v2",
                batch_size=2,
                shard_size=2,
                progress=interrupt,
                name="atlas-cancel",
            )

        def ours(dask_scheduler):
            return [str(k) for k in dask_scheduler.tasks if str(k).startswith("atlas-cancel")]

        for _ in range(50):  # the scheduler forgets cancelled tasks within moments
            left = client.run_on_scheduler(ours)
            if not left:
                break
            time.sleep(0.1)
        assert left == []


def test_an_unreachable_scheduler_is_one_clear_error():
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"Dask scheduler at tcp://127\.0\.0\.1:9 "):
        dask_embed.connect("tcp://127.0.0.1:9", timeout=1)
    assert time.perf_counter() - start < 10
