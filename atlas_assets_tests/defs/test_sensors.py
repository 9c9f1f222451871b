"""The inbox discovery sensor: files become partitions and run requests in one tick."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
import pandas as pd

from atlas_assets import AtlasDataset
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.defs.sensors import inbox_sensor
from atlas_assets.inbox import SETTLE_SECONDS


def run_sensor(store, instance):
    """One tick, after every file in the inbox has settled (see ``inbox.SETTLE_SECONDS``)."""
    past = time.time() - SETTLE_SECONDS - 5
    for path in (store / "inbox").rglob("*"):
        os.utime(path, (past, past))
    context = dg.build_sensor_context(
        instance=instance, resources={"store": AtlasStore(root=str(store))}
    )
    return inbox_sensor(context)


def test_dropped_files_become_partitions_and_runs(store, arxiv):
    inbox = store / "inbox"
    (inbox / "papers").mkdir(parents=True)
    (inbox / "papers" / "atlas.json").write_text(
        json.dumps({"unique_id_field": "arxiv_id", "indexed_field": "title"})
    )
    arxiv.head(5).to_csv(inbox / "papers" / "batch1.csv", index=False)
    (inbox / "notes").mkdir()
    pd.DataFrame({"body": ["a long note", "another longer note"], "tag": ["x", "y"]}).to_json(
        inbox / "notes" / "n.jsonl", orient="records", lines=True
    )
    instance = dg.DagsterInstance.ephemeral()

    result = run_sensor(store, instance)
    assert sorted(r.partition_key for r in result.run_requests) == ["notes", "papers"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["notes", "papers"]
    assert AtlasDataset("papers").total_datums == 5
    assert AtlasDataset("papers").get_data(["0704.0001"])[0]["arxiv_id"] == "0704.0001"
    notes = AtlasDataset("notes")
    assert notes.id_field == "id_" and notes.maps[0].config["indexed_field"] == "body"
    assert not list((inbox / "papers").glob("*.csv"))  # moved after ingestion
    assert len(list((inbox / "papers" / ".ingested").glob("*batch1.csv"))) == 1

    # ingested once: the next tick finds nothing
    instance.add_dynamic_partitions(atlas_datasets.name, ["notes", "papers"])
    assert run_sensor(store, instance).run_requests == []

    # a second batch for a known dataset: a run, no new partition
    arxiv.iloc[5:8].to_csv(inbox / "papers" / "batch2.csv", index=False)
    again = run_sensor(store, instance)
    assert [r.partition_key for r in again.run_requests] == ["papers"]
    assert again.dynamic_partitions_requests == []
    assert AtlasDataset("papers").total_datums == 8


def test_bad_files_and_folders_are_reported_not_retried(store, arxiv):
    inbox = store / "inbox"
    (inbox / "papers").mkdir(parents=True)
    (inbox / "papers" / "atlas.json").write_text(json.dumps({"unique_id_field": "arxiv_id"}))
    arxiv.head(3).to_csv(inbox / "papers" / "a.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    run_sensor(store, instance)
    # repeats an id already stored: refused, set aside with a note, earlier data intact
    arxiv.iloc[2:4].to_csv(inbox / "papers" / "b.csv", index=False)
    (inbox / "(!)").mkdir()
    (inbox / "(!)" / "x.csv").write_text("id,text\n1,a\n")
    result = run_sensor(store, instance)
    assert result.run_requests == []
    notes = list((inbox / "papers" / ".failed").glob("*.error.txt"))
    assert len(notes) == 1 and "already in the dataset" in notes[0].read_text()
    assert AtlasDataset("papers").total_datums == 3
    assert (inbox / "(!)" / "x.csv").exists()  # never became a partition
    assert not instance.get_dynamic_partitions(atlas_datasets.name)
    assert run_sensor(store, instance).run_requests == []  # not retried


def test_a_file_written_moments_ago_waits_for_a_later_tick(store, arxiv):
    (store / "inbox" / "papers").mkdir(parents=True)
    arxiv.head(3).to_csv(store / "inbox" / "papers" / "fresh.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance, resources={"store": AtlasStore(root=str(store))}
    )
    result = inbox_sensor(context)  # no settling: the writer may still be at it
    assert result.run_requests == [] and result.dynamic_partitions_requests == []
    assert (store / "inbox" / "papers" / "fresh.csv").exists()
    assert [r.partition_key for r in run_sensor(store, instance).run_requests] == ["papers"]
    assert AtlasDataset("papers").total_datums == 3
