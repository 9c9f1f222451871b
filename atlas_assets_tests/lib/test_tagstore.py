"""Tests for the tag store: semantics, validation, concurrency and durability.

The promises are tested on both backends, SQLite (the local default) and PostgreSQL (a real
server, see the ``postgres`` fixture): ``new_store`` makes a store of the backend the test is
parametrized with, and ``tables`` gives schema tests raw access to a fresh file or database.
SQLite's own mechanics (WAL, its file) are tested apart.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from atlas_assets.lib.tagstore import (
    MAX_TAG_NAME,
    PALETTE,
    SCHEMA_VERSION,
    BaseTagStore,
    NewerSchemaError,
    TagStore,
)
from atlas_assets.lib.tagstore_pg import PostgresTagStore
from atlas_assets_tests.pg import PASSWORD

IDS = [f"d{i:05d}" for i in range(1000)]
BACKENDS = ["sqlite", "postgres"]
_names = itertools.count()


@pytest.fixture(params=BACKENDS)
def new_store(request, tmp_path) -> Callable[..., BaseTagStore]:
    """Makes a store of the test's backend: each call a new, empty one (a new SQLite file, or a
    new dataset key in the shared PostgreSQL database); ``again(store)`` reopens one."""
    if request.param == "postgres":
        url = request.getfixturevalue("tags_db")

        def make(valid_ids=None) -> BaseTagStore:
            return PostgresTagStore(url, f"ds-{next(_names)}", valid_ids=valid_ids)

    else:

        def make(valid_ids=None) -> BaseTagStore:
            return TagStore(tmp_path / f"tags{next(_names)}.sqlite", valid_ids=valid_ids)

    return make


def again(store: BaseTagStore) -> BaseTagStore:
    """A fresh object over the same stored tags."""
    if isinstance(store, TagStore):
        return TagStore(store.path)
    return type(store)(store.url, store.dataset)


@pytest.fixture
def store(new_store) -> BaseTagStore:
    valid = set(IDS)
    return new_store(valid_ids=lambda: valid)


def snapshot(store: TagStore) -> tuple[list[dict], dict[str, list[str]]]:
    """Everything observable about the store, to prove a failed call wrote nothing."""
    tags = store.get_tags()
    return tags, {t["tag_name"]: store.get_datums_in_tag(t["tag_name"]) for t in tags}


# -- semantics ------------------------------------------------------------------------------


def test_round_trip(store):
    assert store.add(["d00003", "d00001", "d00002"], "sports") == 3
    assert store.get_datums_in_tag("sports") == ["d00001", "d00002", "d00003"]
    assert store.remove(["d00001", "d00999"], "sports") == 1  # d00999 was never tagged
    assert store.get_datums_in_tag("sports") == ["d00002", "d00003"]
    assert store.counts() == {"sports": 2}
    assert store.remove(["d00002", "d00003"], ["sports"]) == 2
    # Removing every member keeps the (now empty) tag; only delete_all deletes it.
    assert store.get_datums_in_tag("sports") == []
    assert store.counts() == {"sports": 0}


def test_creation_order_and_metadata(store):
    assert store.replace_members("zeta", [], description="last letter") == 0
    store.add(IDS[:5], ["alpha", "zeta"])
    store.replace_members("mid", [])
    tags = store.get_tags()
    assert [t["tag_name"] for t in tags] == ["zeta", "alpha", "mid"]
    assert set(tags[0]) == {"tag_name", "tag_id", "metadata"}
    assert tags[0]["metadata"]["description"] == "last letter"
    assert tags[1]["metadata"]["description"] is None
    assert [t["metadata"]["count"] for t in tags] == [5, 5, 0]
    assert len({t["tag_id"] for t in tags}) == 3
    # Colours from the palette in creation order.
    assert [t["metadata"]["color"] for t in tags] == list(PALETTE[:3])
    for t in tags:
        assert isinstance(t["tag_id"], str)
        assert datetime.fromisoformat(t["metadata"]["created"]).tzinfo is not None
    assert tags[0]["metadata"]["created"] <= tags[1]["metadata"]["created"]
    assert store.counts() == {"zeta": 5, "alpha": 5, "mid": 0}


def test_replace_members_keeps_the_tag(store):
    # What every duplicates rebuild does to its derived tag: members change, the tag does not.
    assert store.replace_members("derived", IDS[:3] + IDS[:1], description="x") == 3
    store.add(IDS[3:5], ["derived", "other"])
    before = store.get_tags()[0]
    assert store.replace_members("derived", IDS[8:10], description="ignored") == 2
    after = store.get_tags()[0]
    assert store.get_datums_in_tag("derived") == IDS[8:10]
    assert store.get_datums_in_tag("other") == IDS[3:5]  # other tags untouched
    assert after["tag_id"] == before["tag_id"]
    assert after["metadata"] == {**before["metadata"], "count": 2}
    assert store.replace_members("derived", []) == 0
    assert store.counts() == {"derived": 0, "other": 2}


def test_add_is_idempotent(store):
    assert store.add(IDS[:10], "t") == 10
    assert store.add(IDS[:10], "t") == 0
    assert store.add(IDS[5:15], "t") == 5
    assert store.add(["d00020", "d00020", "d00021"], "t") == 2  # duplicates in the input count once
    assert store.add(IDS[:2], ["t", "u", "u"]) == 2  # only the new tag u gains members
    assert store.counts() == {"t": 17, "u": 2}


def test_delete_all(store):
    store.add(IDS[:10], ["a", "b"])
    old_id = store.get_tags()[0]["tag_id"]
    assert store.remove(None, "a", delete_all=True) == 10
    assert [t["tag_name"] for t in store.get_tags()] == ["b"]
    assert store.get_datums_in_tag("b") == IDS[:10]
    with pytest.raises(ValueError, match="Unknown tag 'a'"):
        store.get_datums_in_tag("a")
    # ids are ignored with delete_all; a re-created tag is new and empty.
    assert store.remove(["d00000"], "b", delete_all=True) == 10
    assert store.get_tags() == []
    store.replace_members("a", [])
    assert store.get_tags()[0]["tag_id"] != old_id
    assert store.get_datums_in_tag("a") == []


def test_memberships_aligned_to_ids(store):
    store.add(["d00001", "d00003"], "odd")
    store.add(["d00002"], "even")
    store.replace_members("empty", [])
    order = ["d00003", "unknown", "d00002", "d00001", "d00003"]
    m = store.memberships(order)
    assert list(m) == ["odd", "even", "empty"]
    assert m["odd"].dtype == bool
    assert m["odd"].tolist() == [True, False, False, True, True]
    assert m["even"].tolist() == [False, False, True, False, False]
    assert m["empty"].tolist() == [False] * 5
    # Keyed by id, so a re-ordered (re-indexed) dataset lines up without any rewrite.
    m2 = store.memberships(np.array(order[::-1]))
    assert m2["odd"].tolist() == m["odd"].tolist()[::-1]
    assert store.memberships([])["odd"].shape == (0,)


def test_accepts_numpy_and_arrow_inputs(new_store):
    valid = pa.array(IDS)
    store = new_store(valid_ids=lambda: valid)
    assert store.add(np.array(IDS[:4]), "np") == 4
    assert store.add(pa.array(IDS[4:6]), "np") == 2
    assert all(type(i) is str for i in store.get_datums_in_tag("np"))
    with pytest.raises(ValueError, match="1 of 2 ids are not in the dataset: 'nope'"):
        store.add(["d00000", "nope"], "np")
    assert store.counts() == {"np": 6}


def test_without_validation_any_string_id_is_stored(new_store):
    store = new_store()
    ids = ["anything", "ünïcode id", "42", "Zed", "a b", "émoji 🙂", "_x"]
    assert store.add(ids, "t") == len(ids)
    # Sorted as Python sorts (code points), whatever the database's locale.
    assert store.get_datums_in_tag("t") == sorted(ids)


# -- validation: clear errors, nothing written ----------------------------------------------

LONG = "x" * (MAX_TAG_NAME + 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add(["d00000", "bad1", "bad2"], "t"), r"2 of 3 ids are not in the dataset"),
        (
            lambda s: s.add([f"nope{i}" for i in range(8)], "t"),
            r"8 of 8 ids .*'nope0', 'nope1', 'nope2', 'nope3', 'nope4', \.\.\.",
        ),
        (lambda s: s.add(["d00000", 7, None], "t"), r"must be strings; 2 of 3 .*NoneType, int"),
        (lambda s: s.add([b"d00000"], "t"), r"must be strings.*bytes"),
        (lambda s: s.add("d00000", "t"), r"not a single str; wrap it in a list"),
        (lambda s: s.add([], "t"), r"at least one datum id"),
        (lambda s: s.add(["d00000"], ""), r"empty or whitespace-only"),
        (lambda s: s.add(["d00000"], "   "), r"empty or whitespace-only"),
        (lambda s: s.add(["d00000"], ["ok", " pad"]), r"start or end with whitespace"),
        (lambda s: s.add(["d00000"], LONG), rf"limit is {MAX_TAG_NAME}"),
        (lambda s: s.add(["d00000"], ["new", 5]), r"must be strings, got int"),
        (lambda s: s.add(["d00000"], []), r"No tag names given"),
        (lambda s: s.replace_members(LONG, []), rf"limit is {MAX_TAG_NAME}"),
        (lambda s: s.replace_members("t", ["d00004", "bad"]), r"1 of 2 ids are not in the dataset"),
        (lambda s: s.replace_members("t", "d00004"), r"not a single str"),
        (lambda s: s.remove(["d00000"], "nosuch"), r"Unknown tag 'nosuch'.*known tags \(1\): 't'"),
        (lambda s: s.remove(["d00000"], ["t", "nosuch"]), r"Unknown tag 'nosuch'"),
        (lambda s: s.remove(None, "nosuch", delete_all=True), r"Unknown tag 'nosuch'"),
        (lambda s: s.remove(None, ["t", "nosuch"], delete_all=True), r"Unknown tag 'nosuch'"),
        (lambda s: s.remove([], "t"), r"empty list of ids; pass delete_all=True"),
        (lambda s: s.remove(None, "t"), r"needs the ids to untag"),
        (lambda s: s.remove([1], "t"), r"must be strings"),
        (lambda s: s.get_datums_in_tag("nosuch"), r"Unknown tag 'nosuch'.*known tags \(1\): 't'"),
        (lambda s: s.memberships([None]), r"must be strings"),
    ],
)
def test_validation_errors_write_nothing(store, call, message):
    store.add(IDS[:3], "t")
    before = snapshot(store)
    with pytest.raises(ValueError, match=message):
        call(store)
    assert snapshot(store) == before


def test_failure_mid_transaction_rolls_back(store, monkeypatch):
    store.add(IDS[:3], "t")
    before = snapshot(store)
    cls = type(store)
    real = cls._create_in
    calls = []

    def flaky(self, con, name, *args):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(self, con, name, *args)

    monkeypatch.setattr(cls, "_create_in", flaky)
    # The first tag gets created and filled before the second fails: all of it must vanish.
    with pytest.raises(RuntimeError, match="boom"):
        store.add(IDS[:10], ["new", "t"])
    monkeypatch.undo()
    assert snapshot(store) == before


# -- durability -----------------------------------------------------------------------------


def test_persists_across_reopen(new_store):
    first = new_store()
    first.add(IDS[:50], ["a", "b"])
    first.remove(IDS[:10], "b")
    tags = first.get_tags()
    reopened = again(first)
    del first
    assert reopened.exists()
    assert reopened.get_tags() == tags
    assert reopened.get_datums_in_tag("b") == IDS[10:50]


def test_sqlite_file_is_wal_with_a_schema_version(tmp_path):
    path = tmp_path / "tags.sqlite"
    TagStore(path).add(IDS[:5], "a")
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TagStore(tmp_path / "nope" / "tags.sqlite").get_tags()


def test_large_batches_count_every_row(new_store):
    ids = [f"row-{i}" for i in range(200_000)]
    valid = frozenset(ids)
    store = new_store(valid_ids=lambda: valid)
    assert store.add(ids[:100_000], ["big", "big2"]) == 200_000
    assert store.add(ids[50_000:150_000], "big") == 50_000
    assert int(store.memberships(ids)["big"].sum()) == 150_000
    assert store.remove(ids[:100_000], "big") == 100_000
    assert store.counts() == {"big": 50_000, "big2": 100_000}


# -- concurrency ----------------------------------------------------------------------------


def _add_worker(store: BaseTagStore, worker: int, n: int, barrier) -> None:
    ids = [f"w{worker}-{i}" for i in range(n)]
    barrier.wait()
    # Many small transactions so the writers really interleave.
    for start in range(0, n, 10):
        store.add(ids[start : start + 10], "shared")
        if start % 50 == 0:
            store.add([ids[start]], f"own-{worker}")


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_concurrent_writers_lose_nothing(new_store, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} not available")
    ctx = mp.get_context(method)
    # spawn children re-import numpy/pyarrow/pytest (~2 s each on 2 cores): two suffice there.
    n_proc, n = (2 if method == "spawn" else 4), 300
    # spawn: every child opens a brand-new store (racing to create the file and schema);
    # fork: children inherit one store object created (and used) in the parent.
    target = new_store()
    if method == "fork":
        target.replace_members("shared", [])
    barrier = ctx.Barrier(n_proc)
    procs = [ctx.Process(target=_add_worker, args=(target, w, n, barrier)) for w in range(n_proc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * n_proc
    store = again(target)
    expected = sorted(f"w{w}-{i}" for w in range(n_proc) for i in range(n))
    assert store.get_datums_in_tag("shared") == expected
    assert store.counts()["shared"] == n_proc * n
    assert {t for t in store.counts() if t.startswith("own-")} == {
        f"own-{w}" for w in range(n_proc)
    }


def test_concurrent_threads_share_one_store(new_store):
    # Fresh stores each round: threads racing to create the file and switch it to WAL is where
    # SQLite fails fast instead of waiting, so this is the case worth repeating.
    for _round in range(10):
        store = new_store()
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def work(w: int, store=store, barrier=barrier, errors=errors) -> None:
            try:
                barrier.wait()
                for i in range(0, 20, 5):
                    store.add([f"t{w}-{j}" for j in range(i, i + 5)], "threads")
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.counts() == {"threads": 80}


BATCH = 20_000


def _batch_writer(store: BaseTagStore, batches: int, started) -> None:
    started.set()
    for b in range(batches):
        store.add([f"b{b}-{i}" for i in range(BATCH)], ["x", "y"])


def test_reader_sees_all_or_nothing(new_store):
    store = new_store()
    store.replace_members("x", [])
    store.replace_members("y", [])
    # fork starts in milliseconds; spawn works too where fork is unavailable.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    started = ctx.Event()
    batches = 8
    proc = ctx.Process(target=_batch_writer, args=(store, batches, started))
    proc.start()
    assert started.wait(60)
    seen = set()
    while proc.is_alive():
        counts = store.counts()
        # Each add() touches both tags in one transaction: never one without the other,
        # never part of a batch.
        assert counts["x"] == counts["y"]
        assert counts["x"] % BATCH == 0
        assert len(store.get_datums_in_tag("x")) % BATCH == 0
        m = store.memberships([f"b{b}-{i}" for b in range(batches) for i in (0, BATCH - 1)])
        assert np.array_equal(m["x"], m["y"])
        assert np.array_equal(m["x"][0::2], m["x"][1::2])  # first and last id of each batch
        seen.add(counts["x"])
    proc.join(60)
    assert proc.exitcode == 0
    assert store.counts() == {"x": batches * BATCH, "y": batches * BATCH}
    assert seen  # the reader really ran while the writer was writing


def _add_and_remove(store: BaseTagStore, worker: int, n: int, barrier) -> None:
    barrier.wait()
    for i in range(n):
        # A membership and a tag of its own per step; every other step takes both back.
        store.add([f"w{worker}-{i}"], ["shared", f"w{worker}-t{i}"])
        if i % 2:
            store.remove([f"w{worker}-{i}"], "shared")
            store.remove(None, f"w{worker}-t{i}", delete_all=True)


def test_two_processes_adding_and_removing_500_tags_lose_nothing(new_store):
    """The issue's bar, on each backend: 2 processes, 500 tags each, added and half removed,
    interleaved; every surviving membership and tag is there, every removed one is gone."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    store, n = new_store(), 500
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_and_remove, args=(store, w, n, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    kept = [(w, i) for w in range(2) for i in range(n) if not i % 2]
    assert store.get_datums_in_tag("shared") == sorted(f"w{w}-{i}" for w, i in kept)
    counts = store.counts()
    assert set(counts) == {"shared"} | {f"w{w}-t{i}" for w, i in kept}
    assert all(counts[f"w{w}-t{i}"] == 1 for w, i in kept)


def _create_in_step(store: BaseTagStore, worker: int, rounds: int, barrier) -> None:
    for i in range(rounds):
        barrier.wait(60)  # both writers create the same new tag at the same moment
        store.add([f"w{worker}"], f"t{i}")


def test_writers_creating_the_same_tag_at_once_both_succeed(new_store):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    store, rounds = new_store(), 60
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_create_in_step, args=(store, w, rounds, barrier)) for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.counts() == {f"t{i}": 2 for i in range(rounds)}
    # Each tag was made once: one id, one colour in creation order.
    tags = store.get_tags()
    assert len({t["tag_id"] for t in tags}) == rounds
    assert [t["metadata"]["color"] for t in tags] == [
        PALETTE[i % len(PALETTE)] for i in range(rounds)
    ]


# -- schema versions ------------------------------------------------------------------------

# The tables exactly as the code before schema migrations (commit 88909b0) created them.
SQLITE_V1 = (
    """CREATE TABLE IF NOT EXISTS tags (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tag_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    color TEXT,
    description TEXT
)""",
    """CREATE TABLE IF NOT EXISTS memberships (
    tag_seq INTEGER NOT NULL REFERENCES tags(seq),
    datum_id TEXT NOT NULL,
    PRIMARY KEY (tag_seq, datum_id)
) WITHOUT ROWID""",
)
PG_V1 = (
    """CREATE TABLE IF NOT EXISTS atlas_tag_schema (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS atlas_tag_datasets (
        dataset TEXT PRIMARY KEY,
        tags_created BIGINT NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS atlas_tags (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dataset TEXT NOT NULL REFERENCES atlas_tag_datasets(dataset) ON DELETE CASCADE,
        tag_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        created TEXT NOT NULL,
        color TEXT,
        description TEXT,
        UNIQUE (dataset, name)
    )""",
    """CREATE TABLE IF NOT EXISTS atlas_tag_members (
        tag_seq BIGINT NOT NULL REFERENCES atlas_tags(seq) ON DELETE CASCADE,
        datum_id TEXT NOT NULL,
        PRIMARY KEY (tag_seq, datum_id)
    )""",
)
# Version 1's tags, as that code wrote them: (tag_id, name, created, color, members).
OLD_TAGS = [
    ("11111111-aaaa", "keep", "2026-11-02T10:00:00.000+00:00", PALETTE[0], ["d00002", "d00001"]),
    ("22222222-bbbb", "empty", "2026-11-02T10:05:00.000+00:00", PALETTE[1], []),
]


def _next(table: str) -> tuple[str, ...]:
    """A version 2 as a later release might add: a column filled for the existing rows, and a
    table whose single row shows the migration ran once (run twice, the ALTER fails)."""
    return (
        f"ALTER TABLE {table} ADD COLUMN note TEXT",
        f"UPDATE {table} SET note = 'from version 1'",
        "CREATE TABLE migrated (n INTEGER PRIMARY KEY)",
        "INSERT INTO migrated VALUES (1)",
    )


class NextTagStore(TagStore):
    MIGRATIONS = (*TagStore.MIGRATIONS, _next("tags"))


class NextPostgresTagStore(PostgresTagStore):
    MIGRATIONS = (*PostgresTagStore.MIGRATIONS, _next("atlas_tags"))


class BrokenTagStore(TagStore):
    MIGRATIONS = (*TagStore.MIGRATIONS, (*_next("tags")[:2], "SELECT * FROM no_such_table"))


class BrokenPostgresTagStore(PostgresTagStore):
    MIGRATIONS = (
        *PostgresTagStore.MIGRATIONS,
        (*_next("atlas_tags")[:2], "SELECT * FROM no_such_table"),
    )


class SqliteTables:
    """One fresh SQLite tag file, and raw SQL on it."""

    kind = "sqlite"
    tags_table = "tags"

    def __init__(self, path) -> None:
        self.path = path
        self.where = f"Tag file {path}"  # how errors name it

    def store(self, kind: str = "") -> BaseTagStore:
        cls = {"": TagStore, "next": NextTagStore, "broken": BrokenTagStore}[kind]
        return cls(self.path)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        con = sqlite3.connect(self.path, isolation_level=None)
        try:
            return con.execute(statement, params).fetchall()
        finally:
            con.close()

    def version(self) -> int:
        return self.sql("PRAGMA user_version")[0][0]

    def set_version(self, version: int) -> None:
        self.sql(f"PRAGMA user_version = {version}")

    def create_v1(self, *, recorded: bool) -> None:
        for statement in SQLITE_V1:
            self.sql(statement)
        if recorded:
            self.set_version(1)
        for seq, (tag_id, name, created, color, members) in enumerate(OLD_TAGS, 1):
            self.sql(
                "INSERT INTO tags (tag_id, name, created, color) VALUES (?, ?, ?, ?)",
                (tag_id, name, created, color),
            )
            for datum in members:
                self.sql("INSERT INTO memberships VALUES (?, ?)", (seq, datum))

    def rows(self) -> list[tuple]:
        return self.sql("SELECT * FROM tags ORDER BY seq") + self.sql(
            "SELECT * FROM memberships ORDER BY tag_seq, datum_id"
        )


class PostgresTables:
    """One fresh PostgreSQL database (the schema tests change its tables), and raw SQL on it."""

    kind = "postgres"
    tags_table = "atlas_tags"
    dataset = "old"

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = f"ATLAS_TAGS_URL ({url.replace(PASSWORD, '***')})"

    def store(self, kind: str = "") -> BaseTagStore:
        cls = {
            "": PostgresTagStore,
            "next": NextPostgresTagStore,
            "broken": BrokenPostgresTagStore,
        }[kind]
        return cls(self.url, self.dataset)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            cur = con.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def version(self) -> int:
        return self.sql("SELECT max(version) FROM atlas_tag_schema")[0][0]

    def set_version(self, version: int) -> None:
        self.sql("UPDATE atlas_tag_schema SET version = %s", (version,))

    def create_v1(self, *, recorded: bool) -> None:
        for statement in PG_V1 if recorded else PG_V1[1:]:
            self.sql(statement)
        if recorded:
            self.sql("INSERT INTO atlas_tag_schema VALUES (1)")
        self.sql("INSERT INTO atlas_tag_datasets VALUES (%s, %s)", (self.dataset, len(OLD_TAGS)))
        for tag_id, name, created, color, members in OLD_TAGS:
            (seq,) = self.sql(
                "INSERT INTO atlas_tags (dataset, tag_id, name, created, color) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING seq",
                (self.dataset, tag_id, name, created, color),
            )[0]
            for datum in members:
                self.sql("INSERT INTO atlas_tag_members VALUES (%s, %s)", (seq, datum))

    def rows(self) -> list[tuple]:
        return (
            self.sql("SELECT * FROM atlas_tag_datasets ORDER BY dataset")
            + self.sql("SELECT * FROM atlas_tags ORDER BY seq")
            + self.sql("SELECT * FROM atlas_tag_members ORDER BY tag_seq, datum_id")
        )


_databases = itertools.count()


@pytest.fixture(params=BACKENDS)
def tables(request, tmp_path) -> SqliteTables | PostgresTables:
    """A fresh tag file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        return PostgresTables(server.create_database(f"tag_schema_{next(_databases)}"))
    return SqliteTables(tmp_path / "tags.sqlite")


def old_tags_intact(store: BaseTagStore) -> None:
    assert [
        (t["tag_id"], t["tag_name"], t["metadata"]["created"], t["metadata"]["color"])
        for t in store.get_tags()
    ] == [tag[:4] for tag in OLD_TAGS]
    assert store.counts() == {"keep": 2, "empty": 0}
    assert store.get_datums_in_tag("keep") == ["d00001", "d00002"]


@pytest.mark.parametrize("recorded", [True, False], ids=["version-1", "no-version"])
def test_tables_from_before_migrations_are_version_1_and_upgraded_in_place(tables, recorded):
    """Tables as the code before migrations made them (with its version 1 recorded, or none
    at all) open as version 1, and the next version's migration runs on them once, keeping
    every tag."""
    tables.create_v1(recorded=recorded)
    old_tags_intact(tables.store())  # today's version: recognised, nothing to migrate
    assert tables.version() == 1  # recorded now if it was not
    upgraded = tables.store("next")
    old_tags_intact(upgraded)
    assert tables.version() == 2
    assert tables.sql(f"SELECT note FROM {tables.tags_table}") == [("from version 1",)] * 2
    assert tables.sql("SELECT n FROM migrated") == [(1,)]
    assert upgraded.add(["d00003"], "keep") == 1  # and the upgraded tables take writes
    assert tables.store("next").get_datums_in_tag("keep") == ["d00001", "d00002", "d00003"]
    assert tables.sql("SELECT n FROM migrated") == [(1,)]  # a second opener migrates nothing


def test_a_newer_schema_is_refused_naming_where_and_nothing_is_written(tables):
    """Tables a newer release wrote: one line naming the setting or the file, whether this
    process opens them afresh or had opened them before the newer release upgraded them."""
    tables.create_v1(recorded=True)
    running = tables.store()
    old_tags_intact(running)  # a long-running process, before the upgrade
    tables.store("next").get_tags()  # a newer release opens the tables: version 2 now
    before = tables.rows()
    for store in (running, tables.store()):
        for call in (
            lambda s: s.add(["d00009"], "keep"),
            lambda s: s.replace_members("fresh", ["d00009"]),
            lambda s: s.remove(None, "keep", delete_all=True),
            lambda s: s.get_tags(),
            lambda s: s.counts(),
        ):
            with pytest.raises(NewerSchemaError) as caught:
                call(store)
            message = str(caught.value)
            assert message == (
                f"{tables.where} holds tags of schema version 2, written by a newer "
                f"atlas-assets (this one knows up to version {SCHEMA_VERSION}); upgrade "
                "atlas-assets to use it. Nothing was read or written."
            )
    assert tables.rows() == before and tables.version() == 2


def test_a_failing_migration_changes_nothing(tables):
    tables.create_v1(recorded=True)
    before = tables.rows()
    with pytest.raises(Exception, match="no_such_table"):
        tables.store("broken").get_tags()
    assert tables.version() == 1 and tables.rows() == before  # no column added, no tag lost
    old_tags_intact(tables.store())


def _open_next(tables, worker: int, barrier) -> None:
    barrier.wait(60)
    tables.store("next").add([f"p{worker}"], "racing")


def test_two_processes_opening_an_old_store_at_once_migrate_it_once(tables):
    tables.create_v1(recorded=True)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_open_next, args=(tables, w, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert tables.sql("SELECT n FROM migrated") == [(1,)] and tables.version() == 2
    store = tables.store("next")
    assert store.get_datums_in_tag("racing") == ["p0", "p1"]
    assert store.get_datums_in_tag("keep") == ["d00001", "d00002"]
