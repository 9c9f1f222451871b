"""The inbox of a store on S3 (moto's server on 127.0.0.1): files put under
``s3://bucket/store/inbox/<dataset>/`` are ingested into the store and then moved, on S3,
to ``.ingested/`` or ``.failed/``; unfinished or unsettled objects are left alone."""

from __future__ import annotations

import json
import time

import pytest

from atlas_assets import AtlasDataset
from atlas_assets.inbox import scan_inbox
from atlas_assets.store import atlas_home, list_datasets


@pytest.fixture
def bucket_inbox(s3_server, s3_store):
    """``(fs, key of the store's inbox)``: a client of the S3 server, as a user dropping files."""
    return s3_server.fs(), s3_store.removeprefix("s3://") + "/inbox"


def names(fs, prefix: str) -> list[str]:
    """Every object under ``prefix``, relative to it."""
    return sorted(p[len(prefix) + 1 :] for p in fs.find(prefix))


def drop(fs, inbox: str, arxiv, name: str, rows: slice, dataset: str = "papers") -> None:
    fs.pipe(f"{inbox}/{dataset}/atlas.json", json.dumps({"unique_id_field": "arxiv_id"}).encode())
    frame = arxiv.iloc[rows][["arxiv_id", "title", "abstract"]]
    fs.pipe(f"{inbox}/{dataset}/{name}", frame.to_csv(index=False).encode())


def test_a_dropped_file_is_ingested_and_moved_on_s3(bucket_inbox, arxiv):
    fs, inbox = bucket_inbox
    drop(fs, inbox, arxiv, "batch.csv", slice(0, 20))
    [result] = scan_inbox(settle=0)
    assert (result.dataset, result.file, result.rows, result.error) == (
        "papers",
        "batch.csv",
        20,
        None,
    )
    assert AtlasDataset("papers").total_datums == 20
    assert AtlasDataset("papers").id_field == "arxiv_id"  # atlas.json was read
    [ingested] = [n for n in names(fs, inbox) if n.startswith("papers/.ingested/")]
    assert ingested.endswith("-batch.csv")
    assert names(fs, inbox) == sorted([ingested, "papers/atlas.json"])  # atlas.json stays
    assert (atlas_home() / "inbox" / ingested).is_file()  # where the local copy moved
    assert scan_inbox(settle=0) == []  # nothing is taken twice

    # The move on S3 failed after ingestion (the object is still in the inbox): the content
    # hash stops it being added again, and it is moved this time.
    fs.copy(f"{inbox}/{ingested}", f"{inbox}/papers/batch.csv")
    [again] = scan_inbox(settle=0)
    assert (again.rows, again.error, again.note) == (0, None, "already ingested: nothing added")
    assert AtlasDataset("papers").total_datums == 20
    assert "papers/batch.csv" not in names(fs, inbox)
    assert len([n for n in names(fs, inbox) if n.startswith("papers/.ingested/")]) == 2


def test_a_bad_file_is_moved_to_failed_with_its_note(bucket_inbox, arxiv):
    fs, inbox = bucket_inbox
    fs.pipe(f"{inbox}/papers/atlas.json", json.dumps({"unique_id_field": "arxiv_id"}).encode())
    fs.pipe(f"{inbox}/papers/bad.csv", b"arxiv_id,title\n1,a\n1,b\n")  # a repeated id
    fs.pipe(f"{inbox}/papers/notes.txt", b"not data")
    results = scan_inbox(settle=0)
    assert sorted(r.file for r in results) == ["bad.csv", "notes.txt"]
    assert all(r.error and not r.rows for r in results)
    assert list_datasets() == []
    found = names(fs, inbox)
    assert all(n.startswith("papers/.failed/") for n in found if n != "papers/atlas.json")
    [note] = [n for n in found if n.endswith("-bad.csv.error.txt")]
    [failed] = [r for r in results if r.file == "bad.csv"]
    assert fs.cat_file(f"{inbox}/{note}").decode().strip() == failed.error
    assert len(found) == 5  # atlas.json, both files and both notes
    assert scan_inbox(settle=0) == []  # reported once, never retried


def test_unfinished_and_unsettled_objects_are_left_alone(bucket_inbox, arxiv):
    fs, inbox = bucket_inbox
    drop(fs, inbox, arxiv, "batch.csv.part", slice(0, 5))
    fs.pipe(f"{inbox}/papers/.hidden.csv", b"arxiv_id,title\n1,a\n")
    assert scan_inbox(settle=0) == []
    drop(fs, inbox, arxiv, "fresh.csv", slice(0, 5))
    assert scan_inbox(settle=3600) == []  # put moments ago: its writer may still be at it
    assert list_datasets() == []
    local = atlas_home() / "inbox" / "papers"
    assert not (local / "batch.csv.part").exists() and not (local / "fresh.csv").exists()
    assert names(fs, inbox) == [
        "papers/.hidden.csv",
        "papers/atlas.json",
        "papers/batch.csv.part",
        "papers/fresh.csv",
    ]
    [result] = scan_inbox(settle=0)  # settled now (by the clock it is judged by)
    assert (result.file, result.rows) == ("fresh.csv", 5)


def test_the_sensor_requests_a_run_for_a_file_put_in_the_bucket(bucket_inbox, s3_store, arxiv):
    import dagster as dg

    from atlas_assets.defs.resources import AtlasStore
    from atlas_assets.defs.sensors import inbox_sensor
    from atlas_assets.inbox import SETTLE_SECONDS

    fs, inbox = bucket_inbox
    drop(fs, inbox, arxiv, "batch.csv", slice(0, 5))
    put_at = time.time()
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"store": AtlasStore(root=s3_store)}
    )
    assert inbox_sensor(context).run_requests == []  # put moments ago: not yet settled
    time.sleep(max(0.0, put_at + SETTLE_SECONDS + 1.5 - time.time()))  # the real wait
    result = inbox_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["papers"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["papers"]
    assert AtlasDataset("papers").total_datums == 5
    assert [n for n in names(fs, inbox) if not n.startswith("papers/.ingested/")] == [
        "papers/atlas.json"
    ]
