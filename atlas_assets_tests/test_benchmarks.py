"""Smoke tests: each benchmark of ours still runs end to end on tiny inputs.

They check the shape of the output (the table and the final ratio line), not the speed.
"""

from __future__ import annotations

import re

import pytest

LAST_LINE = re.compile(r"^(\w+): .+ ratio=[\d.]+ target=\S+ quality=\S+")


@pytest.fixture(autouse=True)
def _bench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_BENCH_CACHE", str(tmp_path / "bench-cache"))


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
def test_embed_benchmark_runs(capsys):
    from benchmarks import embed

    # A static model of the first 3,000 token ids: the full one takes a minute to distil.
    line = embed.main(["--quick", "--n", "8", "--static-vocab", "3000"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "embed"
    assert "(ok)" in line  # ours and plain encode agree on every vector
    assert " fast=" in line and " nmi=" in line  # the fast path is always measured


@pytest.mark.slow
def test_project_benchmark_runs(capsys):
    from benchmarks import project

    line = project.main(["--quick", "--n", "300"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "project"
    assert "trust=" in line


def test_clustered_vectors_are_unit_and_seeded():
    import numpy as np

    from benchmarks.project import clustered_vectors

    a, b = clustered_vectors(50, 16), clustered_vectors(50, 16)
    assert a.shape == (50, 16) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_refresh_benchmark_runs(capsys, tmp_path, monkeypatch):
    from benchmarks import refresh

    monkeypatch.setenv("ATLAS_HOME", str(tmp_path))  # the benchmark points both homes elsewhere
    line = refresh.main(["--quick", "--n", "30", "--stability-n", "60"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "refresh"
    assert "carried kept1=" in line and "scratch kept1=" in line


@pytest.mark.slow
def test_scale_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchmarks import scale

    monkeypatch.setenv("ATLAS_HOME", str(tmp_path))
    line = scale.main(["--n", "3000"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "scale" and "peak_rss=" in line


@pytest.mark.slow
def test_reader_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchmarks import reader

    monkeypatch.setenv("ATLAS_HOME", str(tmp_path))
    line = reader.main(["--n", "2000"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "reader"


@pytest.mark.slow
def test_e2e_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchmarks import e2e

    for var in ("ATLAS_HOME", "DAGSTER_HOME"):  # the benchmark points both at a temporary store
        monkeypatch.setenv(var, str(tmp_path))
    line = e2e.main(["--n", "20"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "e2e"
    assert "map:20rows," in line and "checks_passed" in line


@pytest.mark.slow
def test_dask_embed_benchmark_runs(capsys):
    from benchmarks import dask_embed

    line = dask_embed.main(["--n", "24", "--rounds", "1", "--batch-size", "4"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "dask_embed"
    assert "identical=24/24" in line and "(ok)" in line  # the same vectors either way


def test_benchmark_embeddings_go_through_the_products_cache(monkeypatch):
    """``common.embeddings`` fills the store's EmbeddingCache (per text), so a second corpus
    sharing texts embeds only the new ones, and ``cached_vectors`` reads the same cache."""
    import numpy as np

    from atlas_assets.lib import embed
    from benchmarks import common

    calls: list[list[str]] = []

    def fake_embed(texts, model=None):  # recorded, and deterministic per text
        calls.append(list(texts))
        return embed.normalize(np.array([[len(t), 1.0, 0.0] for t in texts], np.float32))

    monkeypatch.setattr(embed, "embed_texts", fake_embed)
    first = common.embeddings(common.Corpus("a", ["one", "three", "one"]))
    second = common.embeddings(common.Corpus("b", ["three", "sixteen"]))
    assert calls == [["one", "three"], ["sixteen"]]
    np.testing.assert_array_equal(first[1], second[0])
    assert common.cached_vectors("all-MiniLM-L6-v2", ["one", "sixteen"]) is not None
    assert common.cached_vectors("all-MiniLM-L6-v2", ["never seen"]) is None
    assert list(common.vector_cache().directory.glob("*.arrow"))  # the product's shard files


@pytest.mark.slow
def test_shared_store_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchmarks import shared_store

    monkeypatch.setenv("ATLAS_HOME", str(tmp_path))  # the benchmark points every setting elsewhere
    line = shared_store.main(["--quick", "--n", "300", "--reader-n", "2000"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "shared_store"
    assert "open_ratio=" in line and "reader_rss=2000rows:" in line


@pytest.mark.slow
def test_dask_knn_benchmark_runs(capsys):
    from benchmarks import dask_knn

    line = dask_knn.main(["--quick", "--rounds", "1", "--block-rows", "20000"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "dask_knn"
    # Blocks of query rows searched on the workers give the single-machine graph, row for row.
    assert "identical=60000/60000,recall=1.0000," in line and "(ok)" in line
    assert " model_limit=" in line


@pytest.mark.slow
def test_lease_benchmark_runs(capsys, monkeypatch, tmp_path):
    from benchmarks import lease

    monkeypatch.setenv("ATLAS_HOME", str(tmp_path))  # the benchmark points every setting elsewhere
    line = lease.main(["--n", "5"])
    assert _last_line(capsys) == line
    assert LAST_LINE.match(line).group(1) == "lease" and "lock_ms=" in line
