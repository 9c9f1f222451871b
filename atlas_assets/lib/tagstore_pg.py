"""The PostgreSQL backend of the tag store, for a store that several machines share.

SQLite needs a local file system (its locks do not work on an object store or most network
ones), so a shared setup keeps the live tags in one PostgreSQL database
(``ATLAS_TAGS_URL=postgresql://...``), every dataset's tags in the same tables, keyed by the
dataset's partition key. The promises are those of the SQLite store:

* **One transaction per call**, validated first; a failed call writes nothing.
* **Writers of one dataset queue**: a write transaction first locks the dataset's row in
  ``atlas_tag_datasets`` (as SQLite's ``BEGIN IMMEDIATE`` takes the write lock), so what it
  read still holds at commit and concurrent writers lose nothing. Datasets do not block each
  other.
* **Readers see one snapshot** (``REPEATABLE READ``, read only) and never block writers.
* **A connection per call**: nothing shared between threads or across ``fork()``.
* **Set-based**: ids travel as one ``text[]`` parameter, and memberships change in one
  statement per tag.

Schema (``atlas_tag_schema.version`` = :data:`SCHEMA_VERSION`; upgraded at open as the SQLite
store's, see :mod:`atlas_assets.lib.tagstore`, under an advisory lock)::

    atlas_tag_datasets(dataset TEXT PRIMARY KEY, tags_created BIGINT)
    atlas_tags(seq BIGINT IDENTITY PRIMARY KEY, dataset TEXT, tag_id TEXT UNIQUE, name TEXT,
               created TEXT, color TEXT, description TEXT, UNIQUE (dataset, name))
    atlas_tag_members(tag_seq BIGINT, datum_id TEXT, PRIMARY KEY (tag_seq, datum_id))

The tables live in the connection's schema (``public`` unless the URL says otherwise, e.g.
``?options=-csearch_path%3Dteam_a``): give each store its own database or schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from atlas_assets.lib import pg
from atlas_assets.lib.tagstore import PALETTE, BaseTagStore, _now, _preview

SETTING = "ATLAS_TAGS_URL"
# Advisory lock key: a migration holds it exclusively (so two processes opening an old database
# migrate it once; concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's catalog), and
# every write transaction shared (so none writes across a migration). Any fixed number.
_SCHEMA_LOCK = 7_146_311_502
# (connection URL, schema version) pairs whose tables this process has already brought up.
_READY: set[tuple[str, int]] = set()

# The migrations (see BaseTagStore.MIGRATIONS): append, never edit one that has shipped, and keep
# atlas_tag_schema, which older code reads to refuse a newer database.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the tables.
    (
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
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
# Python's str order (code points) rather than the database's locale, as SQLite sorts.
_SORTED = 'ORDER BY datum_id COLLATE "C"'


class PostgresTagStore(BaseTagStore):
    """Tags of one dataset in a shared PostgreSQL database.

    Args:
        url: ``postgresql://user:password@host:port/database`` (checked now; a malformed one is
            a ``ValueError`` naming ``ATLAS_TAGS_URL``).
        dataset: The dataset's key in the shared tables (its partition key).
        valid_ids: See :class:`~atlas_assets.lib.tagstore.BaseTagStore`.
    """

    MIGRATIONS = _MIGRATIONS

    def __init__(
        self,
        url: str,
        dataset: str,
        valid_ids: Callable[[], Collection[str]] | None = None,
    ) -> None:
        super().__init__(valid_ids)
        self.url = pg.check_url(url, SETTING)
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"PostgresTagStore({pg.redact(self.url)!r}, {self.dataset!r})"

    def __str__(self) -> str:
        return f"tag store {pg.redact(self.url)} (dataset {self.dataset!r})"

    def _schema_location(self) -> str:
        return f"{SETTING} ({pg.redact(self.url)})"

    # -- connections and transactions ---------------------------------------------------------

    def _connect(self):
        con = pg.connect(self.url, SETTING)
        ready = (self.url, self.schema_version)
        if ready not in _READY:
            try:
                self._ensure_schema(con)
            except BaseException:
                con.close()
                raise
            _READY.add(ready)
        return con

    @staticmethod
    def _recorded_version(con) -> int | None:
        """The version ``atlas_tag_schema`` records, ``None`` if it records none."""
        if con.execute("SELECT to_regclass('atlas_tag_schema')").fetchone()[0] is None:
            return None
        return con.execute("SELECT max(version) FROM atlas_tag_schema").fetchone()[0]

    def _stored_version(self, con) -> int:
        """The tables' version: 0 for none, 1 for tables from before it was recorded."""
        recorded = self._recorded_version(con)
        if recorded is not None:
            return recorded
        return 1 if con.execute("SELECT to_regclass('atlas_tags')").fetchone()[0] else 0

    def _ensure_schema(self, con) -> None:
        with con.transaction():
            recorded, version = self._recorded_version(con), self._stored_version(con)
        self._check_schema(version)  # a newer database: refused before taking any lock
        if recorded == self.schema_version:
            return
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            # Re-read under the lock: another process may have just migrated.
            self._migrate(con, self._stored_version(con))
            if self._recorded_version(con) != self.schema_version:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS atlas_tag_schema (version INTEGER NOT NULL)"
                )
                con.execute("DELETE FROM atlas_tag_schema")
                con.execute("INSERT INTO atlas_tag_schema VALUES (%s)", (self.schema_version,))

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator:
        """One connection, one transaction: committed on success, rolled back on any error.

        A write first locks the dataset's row, so writers of one dataset run one at a time."""
        import psycopg

        con = self._connect()
        try:
            if not write:
                con.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                con.read_only = True
            with con.transaction():
                if write:
                    # Never across a migration (which holds the lock exclusively); read after it,
                    # the version below is the migrated one.
                    con.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_SCHEMA_LOCK,))
                # Upgraded by a newer process since this one opened the database? Then refuse.
                (version,) = con.execute("SELECT max(version) FROM atlas_tag_schema").fetchone()
                self._check_schema(version or 0)
                if write:
                    # Upsert-and-lock in one statement; DO UPDATE (not NOTHING) so the row is
                    # locked whether it was just made or already there.
                    con.execute(
                        "INSERT INTO atlas_tag_datasets (dataset) VALUES (%s) "
                        "ON CONFLICT (dataset) DO UPDATE SET dataset = EXCLUDED.dataset",
                        (self.dataset,),
                    )
                yield con
        finally:
            con.close()

    def _tag_seqs(self, con) -> dict[str, int]:
        return dict(
            con.execute(
                "SELECT name, seq FROM atlas_tags WHERE dataset = %s ORDER BY seq",
                (self.dataset,),
            ).fetchall()
        )

    def _create_in(self, con, name: str, description: str | None = None) -> int:
        """Create ``name`` if missing (inside the caller's write transaction); its ``seq``.

        An existing tag keeps its id, creation time, colour and description."""
        row = con.execute(
            "SELECT seq FROM atlas_tags WHERE dataset = %s AND name = %s", (self.dataset, name)
        ).fetchone()
        if row is not None:
            return int(row[0])
        # Colours follow the dataset's creation order, never reused after a delete (as the
        # SQLite store's AUTOINCREMENT).
        (made,) = con.execute(
            "UPDATE atlas_tag_datasets SET tags_created = tags_created + 1 "
            "WHERE dataset = %s RETURNING tags_created",
            (self.dataset,),
        ).fetchone()
        (seq,) = con.execute(
            "INSERT INTO atlas_tags (dataset, tag_id, name, created, color, description) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
            (
                self.dataset,
                str(uuid.uuid4()),
                name,
                _now(),
                PALETTE[(made - 1) % len(PALETTE)],
                description,
            ),
        ).fetchone()
        return int(seq)

    @staticmethod
    def _check_text(values: list[str], what: str) -> None:
        # PostgreSQL text cannot hold NUL; refuse it up front rather than mid-transaction.
        bad = [v for v in values if "\x00" in v]
        if bad:
            raise ValueError(
                f"{len(bad)} {what} contain a NUL character, which PostgreSQL cannot store: "
                f"{_preview(bad)}"
            )

    # -- the backend's transactions -----------------------------------------------------------

    def exists(self) -> bool:
        with self._transaction(write=False) as con:
            row = con.execute(
                "SELECT 1 FROM atlas_tag_datasets WHERE dataset = %s", (self.dataset,)
            ).fetchone()
        return row is not None

    def _read_tags(self) -> list[tuple]:
        with self._transaction(write=False) as con:
            return con.execute(
                "SELECT t.tag_id, t.name, t.created, t.color, t.description, "
                "(SELECT count(*) FROM atlas_tag_members m WHERE m.tag_seq = t.seq) "
                "FROM atlas_tags t WHERE t.dataset = %s ORDER BY t.seq",
                (self.dataset,),
            ).fetchall()

    def _add(self, names: list[str], ids: list[str]) -> int:
        self._check_text(names, "tag names")
        self._check_text(ids, "ids")
        with self._transaction(write=True) as con:
            added = 0
            for name in names:
                seq = self._create_in(con, name)
                # rowcount counts only rows inserted, not the conflicts skipped.
                added += con.execute(
                    "INSERT INTO atlas_tag_members (tag_seq, datum_id) "
                    "SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (seq, ids),
                ).rowcount
            return added

    def _replace(self, name: str, ids: list[str], description: str) -> None:
        self._check_text([name], "tag names")
        self._check_text(ids, "ids")
        with self._transaction(write=True) as con:
            seq = self._create_in(con, name, description=description)
            con.execute("DELETE FROM atlas_tag_members WHERE tag_seq = %s", (seq,))
            con.execute(
                "INSERT INTO atlas_tag_members (tag_seq, datum_id) "
                "SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (seq, ids),
            )

    def _remove(self, names: list[str], ids: list[str] | None) -> int:
        with self._transaction(write=True) as con:
            seqs = self._tag_seqs(con)
            missing = [n for n in names if n not in seqs]
            if missing:
                raise self._unknown_tag_error(list(seqs), missing)
            removed = 0
            for name in names:
                seq = seqs[name]
                if ids is None:
                    removed += con.execute(
                        "DELETE FROM atlas_tag_members WHERE tag_seq = %s", (seq,)
                    ).rowcount
                    con.execute("DELETE FROM atlas_tags WHERE seq = %s", (seq,))
                else:
                    removed += con.execute(
                        "DELETE FROM atlas_tag_members m USING unnest(%s::text[]) AS b(id) "
                        "WHERE m.tag_seq = %s AND m.datum_id = b.id",
                        (ids, seq),
                    ).rowcount
            return removed

    def _members(self, name: str) -> list[str]:
        with self._transaction(write=False) as con:
            seqs = self._tag_seqs(con)
            if name not in seqs:
                raise self._unknown_tag_error(list(seqs), [name])
            rows = con.execute(
                f"SELECT datum_id FROM atlas_tag_members WHERE tag_seq = %s {_SORTED}",
                (seqs[name],),
            ).fetchall()
        return [r[0] for r in rows]

    def _all_members(self) -> dict[str, list[str]]:
        with self._transaction(write=False) as con:
            return {
                name: [
                    r[0]
                    for r in con.execute(
                        "SELECT datum_id FROM atlas_tag_members WHERE tag_seq = %s", (seq,)
                    ).fetchall()
                ]
                for name, seq in self._tag_seqs(con).items()
            }

    def _counts(self) -> dict[str, int]:
        with self._transaction(write=False) as con:
            rows = con.execute(
                "SELECT t.name, (SELECT count(*) FROM atlas_tag_members m "
                "WHERE m.tag_seq = t.seq) FROM atlas_tags t WHERE t.dataset = %s ORDER BY t.seq",
                (self.dataset,),
            ).fetchall()
        return {name: int(n) for name, n in rows}

    def drop(self) -> None:
        """Delete every tag of this dataset, and its row (so a new dataset of the same name
        starts with no tags and the first colour)."""
        with self._transaction(write=True) as con:
            con.execute("DELETE FROM atlas_tag_datasets WHERE dataset = %s", (self.dataset,))
