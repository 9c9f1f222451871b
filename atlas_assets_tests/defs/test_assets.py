"""The assets on an ephemeral Dagster instance: definitions load, and materializing a partition
writes files the reader then reads."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from atlas_assets import AtlasDataset
from atlas_assets.definitions import defs
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.publishing import publish
from atlas_assets.store import RESOURCES, dataset_paths, resource_info
from atlas_assets.store.datasets import update_meta


def names(asset: dg.AssetsDefinition) -> set[str]:
    return {key.to_user_string() for key in asset.keys}


def materialize(partition: str, assets: set[str], *, checks: bool = True, **kwargs):
    """Materialize ``assets`` (and, with ``checks``, the checks on them) of one partition on an
    ephemeral instance, with the project's own definitions and resources."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(atlas_datasets.name, [partition])
    loaded = defs()
    selected = [a for a in loaded.assets if names(a) & assets]
    if checks:
        selected += [
            c
            for c in loaded.asset_checks
            if {k.asset_key.to_user_string() for k in c.check_keys} <= assets
        ]
    result = dg.materialize(
        selected, instance=instance, partition_key=partition, resources=loaded.resources, **kwargs
    )
    if result.success:  # what create_index and the publish_maps sensor do after a run
        publish(dataset_paths(partition), result.run_id)
    return result


def step_failure(result) -> str:
    """The message of the run's first failed step."""
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message


def byo_dataset(name: str, frame, dim: int) -> AtlasDataset:
    """A dataset of ``frame`` with random uploaded vectors and a map configured, not built."""
    ds = AtlasDataset(name, unique_id_field="arxiv_id")
    ds.add_data(frame, embeddings=np.random.default_rng(0).normal(size=(len(frame), dim)))
    update_meta(ds._paths, maps=[{"name": name, "id": "m", "indexed_field": None}])
    return ds


def test_definitions_load():
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    # every resource of the store layout is an asset, and nothing else is
    assert {name for a in loaded.assets for name in names(a)} == set(RESOURCES)
    assert loaded.resolve_job_def("build_map").partitions_def == atlas_datasets


def test_materialize_partition_with_uploaded_embeddings(store, arxiv):
    """Bring-your-own vectors: no model runs; the partition's assets write aligned resources."""
    frame = arxiv.head(40)
    ds = byo_dataset("byo", frame, 16)
    result = materialize("byo", {"dataset", "latent", "knn_graph", "projected"})
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {
        "latent_aligned_with_dataset",
        "latent_vectors_finite",
    }
    assert all(c.passed for c in checks)
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    latent_meta = mats["latent"].materialization.metadata
    assert latent_meta["dagster/row_count"].value == 40
    assert latent_meta["dimensions"].value == 16 and latent_meta["embedded_now"].value == 0
    assert "map" in mats["projected"].materialization.metadata

    paths = dataset_paths("byo")
    versions = {
        resource_info(paths.resource(r))["dataset_version"]
        for r in ("dataset", "latent", "knn_graph", "projected")
    }
    assert len(versions) == 1
    atlas_map = ds.maps[0]
    assert atlas_map.embeddings.latent.shape == (40, 16)
    np.testing.assert_allclose(np.linalg.norm(atlas_map.embeddings.latent, axis=1), 1, atol=1e-5)
    assert atlas_map.embeddings.projected["arxiv_id"].tolist() == frame["arxiv_id"].tolist()


def test_unknown_or_invalid_partition_fails_clearly(store):
    for key, message in (("ghost", "has no data"), ("bad..key", "invalid dataset partition key")):
        result = materialize(key, {"dataset"}, checks=False, raise_on_error=False)
        assert not result.success
        assert message in step_failure(result)


def test_create_index_run_is_recorded_in_the_persistent_instance(built):
    ds, atlas_map, _ = built
    home = ds._paths.root.parents[1] / ".dagster"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and runs[0].job_name == "build_map"
        assert runs[0].tags.get("dagster/partition") == ds._paths.partition_key
        record = instance.get_latest_materialization_event(dg.AssetKey("projected"))
        assert record is not None and record.run_id == runs[0].run_id


@pytest.mark.parametrize("asset", ["latent", "projected"])
def test_downstream_without_upstream_says_what_to_materialize(store, arxiv, asset):
    ds = AtlasDataset("partial", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(5))
    result = materialize("partial", {asset}, checks=False, raise_on_error=False)
    assert "materialize the 'dataset' asset first" in step_failure(result)


def test_alignment_problem_names_what_is_wrong():
    import pyarrow as pa

    from atlas_assets.defs.checks import alignment_problem

    data = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    assert alignment_problem(data, pa.table({"id": ["a", "b"], "x": [1, 2]})) is None
    assert "1 rows" in alignment_problem(data, pa.table({"id": ["a"]}))
    assert "order" in alignment_problem(data, pa.table({"id": ["b", "a"]}))
    assert "id field" in alignment_problem(data, pa.table({"key": ["a", "b"]}))


def test_tags_check_warns_about_ids_not_in_the_dataset(store, arxiv):
    from atlas_assets.lib.tagstore import TagStore

    ds = AtlasDataset("tagcheck", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(4))
    TagStore(ds._paths.tag_db).add([arxiv["arxiv_id"][0], "gone-1"], "t")  # no id validation
    result = materialize("tagcheck", {"dataset", "tags"})
    evaluation = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "tags_refer_to_existing_ids"
    )
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["unknown_ids"].value == 1


def test_a_failing_blocking_check_stops_the_downstream_assets(store, arxiv, monkeypatch):
    """Wiring, not the check's logic (tested above): a failed check must block knn_graph."""
    from atlas_assets.defs import checks as checks_module

    byo_dataset("blocked", arxiv.head(10), 8)
    monkeypatch.setattr(checks_module, "alignment_problem", lambda data, resource: "forced")
    result = materialize("blocked", {"dataset", "latent", "knn_graph"}, raise_on_error=False)
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert "latent_aligned_with_dataset" in failed
    built = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert built == {"dataset", "latent"}  # knn_graph never ran


def test_a_static_latent_never_reuses_transformer_vectors(store, arxiv, static_model):
    """The fast path has its own vectors and cache: transformer vectors cached for the very
    same texts are not taken, and the static ones are reused on the next run."""
    from atlas_assets.lib import static_embed
    from atlas_assets.lib.embed import model_key, text_hashes
    from atlas_assets.store.cache import EmbeddingCache
    from atlas_assets.store.layout import embedding_cache_dir

    frame = arxiv.head(12)
    texts = frame["title"].tolist()
    ds = AtlasDataset("fast", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.configure_index(
        indexed_field="title",
        embedding_model={"mode": "static"},
        topic_model=False,
        duplicate_detection=False,
    )
    # As if distilled on this machine before (a partial table: distilling all of it takes a
    # minute), and as if a transformer map of the same titles had been built.
    static_path = static_embed.model_file(home=store)
    static_embed.save(static_model, static_path, source="test")
    hashes = np.unique(text_hashes(texts))
    EmbeddingCache(embedding_cache_dir(model_key(), store)).add(hashes, np.ones((len(hashes), 384)))

    def latent_metadata():
        result = materialize("fast", {"dataset", "latent"})
        assert result.success
        event = next(
            m
            for m in result.get_asset_materialization_events()
            if m.asset_key.to_user_string() == "latent"
        )
        return {k: v.value for k, v in event.materialization.metadata.items()}

    first = latent_metadata()
    assert first["dimensions"] == static_embed.PCA_DIMS
    assert first["embedded_now"] == len(hashes) and first["from_cache"] == 0
    atlas_map = ds.maps[0]
    np.testing.assert_allclose(atlas_map.embeddings.latent, static_model.encode(texts), atol=1e-6)
    info = resource_info(dataset_paths("fast").resource("latent"))
    assert info["params"]["mode"] == "static"

    second = latent_metadata()
    assert second["embedded_now"] == 0 and second["from_cache"] == len(texts)


def test_projection_model_umap_runs_umap_learn_and_records_it(store, arxiv):
    """``projection={"model": "umap"}`` lays the map out with umap-learn itself, over the map's
    own kNN graph: on real abstracts its map keeps neighbours about as well as ours does, and
    the projected resource records which implementation ran."""
    from sklearn.manifold import trustworthiness

    from atlas_assets.lib.knn import KnnGraph
    from atlas_assets.lib.project import project
    from atlas_assets.store.files import matrix, read_arrow

    frame = arxiv.head(150)
    ds = AtlasDataset("umap-ref", unique_id_field="arxiv_id")
    ds.add_data(frame)
    atlas_map = ds.create_index(
        indexed_field="abstract",
        projection={"model": "umap", "n_neighbors": 10, "seed": 3},
        topic_model=False,
        duplicate_detection=False,
    )
    params = resource_info(ds._paths.resource("projected"))["params"]
    assert params["model"] == "umap" and params["layout"].startswith("umap-learn 0.5")
    theirs = atlas_map.embeddings.projected[["x", "y"]].to_numpy()
    assert theirs.shape == (150, 2) and np.isfinite(theirs).all()

    latent = np.asarray(atlas_map.embeddings.latent)
    table = read_arrow(ds._paths.resource("knn_graph"))
    knn = KnnGraph(matrix(table.column("neighbors")), matrix(table.column("distances")))
    again = project(latent, knn, n_neighbors=10, seed=3, model="umap")
    np.testing.assert_array_equal(again, theirs)  # seeded umap-learn: the same map again
    ours = project(latent, knn, n_neighbors=10, seed=3)
    assert not np.allclose(ours, theirs)  # another implementation did run
    trust_theirs = trustworthiness(latent, theirs, n_neighbors=10)
    trust_ours = trustworthiness(latent, ours, n_neighbors=10)
    assert trust_theirs > 0.85 and abs(trust_theirs - trust_ours) < 0.03


def test_projection_default_records_our_layout_and_refuses_a_short_graph(store, arxiv):
    """The default layout is recorded as ours; a kNN graph with fewer neighbours than
    ``n_neighbors`` needs is an error naming both, not a quietly smaller neighbourhood."""
    from atlas_assets.lib.knn import knn_graph
    from atlas_assets.lib.project import project

    frame = arxiv.head(40)
    ds = byo_dataset("ours", frame, 16)
    assert materialize("ours", {"dataset", "latent", "knn_graph", "projected"}).success
    params = resource_info(dataset_paths("ours").resource("projected"))["params"]
    assert params["model"] is None and params["layout"] == "atlas-assets"

    latent = np.asarray(ds.maps[0].embeddings.latent)
    short = knn_graph(latent, 5)
    for model in (None, "umap"):
        with pytest.raises(ValueError, match="n_neighbors=15 needs 14 neighbours per row"):
            project(latent, short, n_neighbors=15, model=model)


def test_topics_with_hdbscan_cover_every_datum_and_count_noise(store, arxiv):
    """cluster_method="hdbscan" through the asset: umap-learn and HDBSCAN on uploaded vectors,
    every datum labelled at every depth, the noise count in the metadata, the option recorded."""
    frame = arxiv.head(90)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    vectors = centres[np.arange(90) % 3] + rng.normal(size=(90, 16))
    ds = AtlasDataset("hdb", unique_id_field="arxiv_id")
    ds.add_data(frame, embeddings=vectors)
    topic_model = {
        "build_topic_model": True,
        "topic_label_field": "title",
        "cluster_method": "hdbscan",
    }
    update_meta(
        ds._paths,
        maps=[{"name": "hdb", "id": "m", "indexed_field": None, "topic_model": topic_model}],
    )
    assets = {"dataset", "latent", "knn_graph", "projected", "topics", "metadata", "hierarchy"}
    result = materialize("hdb", assets)
    assert result.success
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    meta = mats["topics"].materialization.metadata
    assert isinstance(meta["noise_assigned"].value, int) and 0 <= meta["noise_assigned"].value < 90
    info = resource_info(dataset_paths("hdb").resource("topics"))
    assert info["params"]["cluster_method"] == "hdbscan"
    topics = ds.maps[0].topics
    assert topics.df.notna().all().all()
    # three well-separated clusters: three depth-1 topics, each one cluster
    depth1 = topics.df["topic_depth_1"].to_numpy()
    assert len(set(depth1)) == 3
    assert all(len(set(depth1[np.arange(90) % 3 == c])) == 1 for c in range(3))
