"""The refresh schedule re-reads bound sources and requests builds only where data grew."""

from __future__ import annotations

import dagster as dg
import pytest

from atlas_assets import AtlasDataset
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.defs.schedules import refresh_sources


def tick(store, instance):
    context = dg.build_schedule_context(
        instance=instance, resources={"store": AtlasStore(root=str(store))}
    )
    return refresh_sources(context)


def test_bound_source_is_refreshed_incrementally(store, arxiv, tmp_path):
    source = tmp_path / "papers.csv"
    arxiv.head(5).to_csv(source, index=False)
    ds = AtlasDataset("bound", unique_id_field="arxiv_id")
    ds.bind_source(str(source))
    with dg.instance_for_test() as instance:  # schedules need an instance with a reference
        check_refreshes(store, instance, ds, source, arxiv)


def check_refreshes(store, instance, ds, source, arxiv):
    first = tick(store, instance)
    assert [r.partition_key for r in first] == ["bound"]
    assert ds.total_datums == 5
    assert isinstance(tick(store, instance), dg.SkipReason)  # unchanged: no run at all

    arxiv.head(7).to_csv(source, index=False)  # two rows appended
    grown = tick(store, instance)
    assert [r.partition_key for r in grown] == ["bound"] and ds.total_datums == 7

    source.write_text("not,a\nvalid,,,file\n")
    assert isinstance(tick(store, instance), dg.SkipReason)
    assert ds.total_datums == 7


def test_binding_needs_own_ids_and_a_matching_file(store, tmp_path):
    with pytest.raises(ValueError, match="unique_id_field"):
        AtlasDataset("generated-ids").bind_source(str(tmp_path / "*.csv"))
    with pytest.raises(ValueError, match="no file matches"):
        AtlasDataset("own-ids", unique_id_field="id").bind_source(str(tmp_path / "*.csv"))
