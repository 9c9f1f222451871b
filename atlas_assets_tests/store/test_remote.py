"""A store root that may be a URL: clear errors for bad settings, before anything is written;
``file://`` and ``memory://`` roots; the mirror's read cache."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from atlas_assets.store import atlas_home, dataset_paths, read_json, read_resource, write_json
from atlas_assets.store.files import locked, write_arrow
from atlas_assets.store.remote import StoreConfigError, listing, remote_of
from atlas_assets_tests.store.conftest import without_lease


def _no_library_traceback(err: BaseException) -> bool:
    """The error stands alone: no chained exception from inside a library is printed."""
    return err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize(
    ("home", "says"),
    [
        ("s3:/bucket/prefix", "scheme://bucket/prefix"),
        ("s3://", "names no bucket"),
        ("s3://Bad_Bucket!/x", "not a valid bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/x?versionId=1", "no '?'"),
        ("ftp://host/store", "unsupported scheme 'ftp'"),
        ("file://otherhost/store", "file:///absolute/path"),
    ],
)
def test_a_malformed_store_url_is_one_clear_error_naming_the_setting(home, says, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", home)
    with pytest.raises(StoreConfigError) as caught:
        atlas_home()
    assert str(caught.value).startswith(f"ATLAS_HOME={home!r}") and says in str(caught.value)
    assert _no_library_traceback(caught.value)


@pytest.mark.parametrize(
    ("options", "says"), [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_bad_storage_options_name_the_setting(options, says, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", "memory://atlas/bad-options")
    monkeypatch.setenv("ATLAS_STORAGE_OPTIONS", options)
    with pytest.raises(StoreConfigError, match=f"ATLAS_STORAGE_OPTIONS.*{says}"):
        atlas_home()


def test_a_file_url_is_the_local_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", f"file://{tmp_path}/store")
    assert atlas_home() == (tmp_path / "store").resolve()
    assert remote_of(atlas_home() / "datasets") is None


def test_a_memory_store_round_trips_through_a_fresh_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", "memory://atlas/round-trip")
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "one"))
    written = dataset_paths("docs")
    assert written.root.is_relative_to(tmp_path / "one")
    write_json(written.meta, {"a": 1})
    write_arrow(written.shards / "000001-abc.arrow", pa.table({"v": [1, 2]}))
    # Another mirror (another machine's cache) sees what was written, read from the store.
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "two"))
    other = dataset_paths("docs")
    assert other.root.is_relative_to(tmp_path / "two") and not other.meta.exists()
    assert read_json(other.meta) == {"a": 1}
    assert [f.name for f in other.shard_files()] == ["000001-abc.arrow"]
    assert read_resource(other.shards / "000001-abc.arrow").column("v").to_pylist() == [1, 2]
    # A mutable document read less than ATLAS_REFRESH_SECONDS ago is not asked for again...
    monkeypatch.setenv("ATLAS_REFRESH_SECONDS", "3600")
    write_json(written.meta, {"a": 2})
    assert read_json(other.meta) == {"a": 1}
    with locked(other.lock):  # ...except by a writer, which reads what is stored now
        assert read_json(other.meta) == {"a": 2}
    write_json(written.meta, {"a": 3})
    monkeypatch.setenv("ATLAS_REFRESH_SECONDS", "0")
    assert read_json(other.meta) == {"a": 3}
    assert listing(other.shards) == ["000001-abc.arrow"]


def test_a_missing_bucket_or_wrong_credentials_fail_before_anything_is_written(
    s3_server, tmp_path, monkeypatch
):
    from atlas_assets import AtlasDataset

    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ATLAS_HOME", "s3://no-such-bucket/store")
    monkeypatch.setenv("ATLAS_STORAGE_OPTIONS", json.dumps(s3_server.options()))
    with pytest.raises(StoreConfigError) as caught:
        AtlasDataset("papers", unique_id_field="id")
    message = str(caught.value)
    assert "ATLAS_HOME='s3://no-such-bucket/store'" in message
    assert "bucket 'no-such-bucket' does not exist" in message
    assert _no_library_traceback(caught.value)

    bucket = s3_server.new_bucket()
    monkeypatch.setenv("ATLAS_HOME", f"s3://{bucket}/store")
    wrong = s3_server.options(secret="not-the-secret")
    monkeypatch.setenv("ATLAS_STORAGE_OPTIONS", json.dumps(wrong))
    with pytest.raises(StoreConfigError) as caught:
        AtlasDataset("papers", unique_id_field="id")
    message = str(caught.value)
    assert f"ATLAS_HOME='s3://{bucket}/store'" in message and "ATLAS_STORAGE_OPTIONS" in message
    assert "denied" in message or "Signature" in message
    assert s3_server.fs().ls(bucket) == []  # nothing was written
    assert not (tmp_path / "cache" / "stores").exists() or not any(
        (tmp_path / "cache" / "stores").rglob("*.json")
    )
    # The right credentials work.
    monkeypatch.setenv("ATLAS_STORAGE_OPTIONS", json.dumps(s3_server.options()))
    AtlasDataset("papers", unique_id_field="id").add_data([{"id": "1", "text": "a"}])
    assert s3_server.fs().ls(f"{bucket}/store/datasets/papers/shards")


def test_the_command_line_says_what_is_wrong_with_the_store_in_one_line(monkeypatch, capsys):
    from atlas_assets.cli import main

    monkeypatch.setenv("ATLAS_HOME", "s3:/bucket")
    assert main(["ls"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "atlas ls: error: ATLAS_HOME='s3:/bucket': a store URL has the form scheme://bucket/prefix"
    ]


def test_two_machines_adding_batches_at_once_both_keep_theirs(s3_server, tmp_path, monkeypatch):
    from atlas_assets.store import datasets
    from atlas_assets.store.datasets import count_rows, write_shard
    from atlas_assets.store.files import locked
    from atlas_assets.store.remote import resolve_root

    monkeypatch.setenv("ATLAS_REFRESH_SECONDS", "0")
    url, options = f"s3://{s3_server.new_bucket()}/store", s3_server.options()
    a, b = (
        dataset_paths("docs", resolve_root(url, options, setting="t", cache=tmp_path / m))
        for m in ("a", "b")
    )

    def add(paths, n):
        with locked(paths.lock):
            return write_shard(paths, pa.table({"id": [f"{n}-{i}" for i in range(n)]}), None)

    add(a, 1)
    without_lease(monkeypatch, a)  # so that A can add a batch inside B's lock
    real, raced = datasets._publish, []

    def racing(paths, table, prefix):
        """Machine B has numbered its batch: machine A adds one before B writes it."""
        if paths.root == b.root and not raced:
            raced.append(prefix)
            add(a, 3)
        return real(paths, table, prefix)

    monkeypatch.setattr(datasets, "_publish", racing)
    add(b, 2)
    assert raced == ["000002"]
    names = [f.name[:6] for f in b.shard_files()]
    assert names == ["000001", "000002", "000003"] and count_rows(a) == 1 + 2 + 3


def test_a_document_changed_by_another_machine_meanwhile_is_not_written_over(
    s3_server, tmp_path, monkeypatch
):
    from atlas_assets.store.datasets import load_meta, update_meta
    from atlas_assets.store.remote import ConflictError, resolve_root

    url, options = f"s3://{s3_server.new_bucket()}/store", s3_server.options()
    a, b = (
        dataset_paths("docs", resolve_root(url, options, setting="t", cache=tmp_path / m))
        for m in ("a", "b")
    )
    write_json(a.meta, {"maps": [], "description": "first"})
    without_lease(monkeypatch, a)  # so that A can write inside B's lock
    with locked(b.lock):
        meta = load_meta(b)  # B reads, then writes what it decided on that read
        assert meta["description"] == "first"
        with locked(a.lock):  # machine A changes it between B's read and B's write
            update_meta(a, description="by A")
        with pytest.raises(ConflictError, match="changed by another writer"):
            write_json(b.meta, {**meta, "description": "by B"})
        assert "by B" not in b.meta.read_text()  # nor is the mirror ahead of the store
    monkeypatch.setenv("ATLAS_REFRESH_SECONDS", "0")
    assert load_meta(b)["description"] == "by A"
    with locked(b.lock):  # read again, then written: fine
        update_meta(b, description="by B")
        update_meta(b, description="by B, twice")  # a second write in the same section
    assert load_meta(a)["description"] == "by B, twice"


def test_live_tags_on_a_shared_store_without_a_tags_database_warn_once(tmp_path, monkeypatch):
    """Tags kept in one machine's SQLite file beside a shared store are invisible to the other
    machines: the first tag store opened says so, naming the setting that shares them."""
    import warnings

    from atlas_assets.store.tags import tag_store

    monkeypatch.delenv("ATLAS_TAGS_URL", raising=False)
    monkeypatch.setenv("ATLAS_HOME", "memory://atlas/tags-warning")
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    paths = dataset_paths("docs")
    with pytest.warns(UserWarning, match="ATLAS_TAGS_URL is not set: live tags are kept in"):
        tag_store(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tag_store(paths)  # once per store and process
        monkeypatch.setenv("ATLAS_HOME", str(tmp_path / "local"))
        tag_store(dataset_paths("docs"))  # a local store: no warning
