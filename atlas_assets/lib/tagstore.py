"""A durable, transactional store of datum tags, by default one SQLite file per dataset.

Curators tag datums (by string id, never row position, so tags survive re-indexing) from
notebooks and from the web map, possibly from several processes at once. :class:`BaseTagStore`
holds the API and its promises (validation before any write, one transaction per call, set-based
batches); a backend supplies the SQL: :class:`TagStore` here (SQLite, the local default) or
:class:`~atlas_assets.lib.tagstore_pg.PostgresTagStore` (a shared PostgreSQL database, for a
store that several machines use). The SQLite store is therefore:

* **SQLite in WAL mode** with a busy timeout: readers never block writers and see a consistent
  snapshot; concurrent writers queue instead of failing.
* **One transaction per operation**: writes start with ``BEGIN IMMEDIATE`` (take the write lock
  up front, so a read-then-write can never be invalidated by another writer) and either commit
  completely or not at all. All validation happens before or inside that transaction, so a
  failed call writes nothing.
* **A connection per operation**: nothing is shared between threads or across ``fork()``.
* **Set-based** for large batches: ids go through ``executemany`` into a temp table and the
  membership changes are single ``INSERT ... SELECT`` / ``DELETE ... IN`` statements.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    tags(seq INTEGER PRIMARY KEY AUTOINCREMENT, tag_id TEXT UNIQUE, name TEXT UNIQUE,
         created TEXT, color TEXT, description TEXT)
    memberships(tag_seq INTEGER, datum_id TEXT, PRIMARY KEY (tag_seq, datum_id)) WITHOUT ROWID

**Schema versions.** Each backend lists its migrations (``MIGRATIONS[i]`` takes the tables from
version ``i`` to ``i + 1``; the first creates them) and records the version it wrote. Opening a
store applies the missing ones in order, in one transaction under the backend's lock, so two
processes opening an old store at once upgrade it once. Tables from before the version was
recorded are version 1. A store of a newer version than this code knows is refused with
:class:`NewerSchemaError` before anything is written, at open and again in every transaction
(a long-running process never writes into tables a newer process has since upgraded).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_TAG_NAME = 128
# Long enough to ride out a concurrent 100k-id write on a slow disk; short enough to surface a
# genuinely stuck lock to the user instead of hanging a notebook forever.
BUSY_TIMEOUT_S = 60.0
# How many offending values an error message quotes before summarising with a count.
_SHOW = 5
# Default colours, assigned round-robin by creation order when the caller gives none.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

# The SQLite store's migrations (see the module docstring): append, never edit one that has
# shipped, and keep ``PRAGMA user_version``, which older code reads to refuse a newer file.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the tables.
    (
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
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class NewerSchemaError(RuntimeError):
    """The tag store was written by a newer atlas-assets; nothing was read or written."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _preview(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_SHOW])
    return shown + (", ..." if len(values) > _SHOW else "")


def _check_tag_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError(f"Tag names must be strings, got {type(name).__name__}: {name!r}")
    if not name.strip():
        raise ValueError(f"Tag name must not be empty or whitespace-only, got {name!r}")
    if name != name.strip():
        # " sports" and "sports" would otherwise be two tags that look identical on the map.
        raise ValueError(f"Tag name must not start or end with whitespace, got {name!r}")
    if len(name) > MAX_TAG_NAME:
        raise ValueError(
            f"Tag name is {len(name)} characters long; the limit is {MAX_TAG_NAME}: "
            f"{name[:40]!r}..."
        )
    return name


def _normalize_tags(tags: str | Iterable[str]) -> list[str]:
    """Validated, de-duplicated tag names in the order given."""
    names = [tags] if isinstance(tags, str) else list(tags)
    if not names:
        raise ValueError("No tag names given: pass a tag name or a non-empty list of them")
    return list(dict.fromkeys(_check_tag_name(n) for n in names))


def _normalize_ids(ids: Iterable[str], *, what: str = "ids", dedupe: bool = True) -> list[str]:
    """Ids as a list of Python ``str`` (de-duplicated, first occurrence kept, if ``dedupe``)."""
    if ids is None:
        raise ValueError(f"{what} must be an iterable of string datum ids, got None")
    if isinstance(ids, str | bytes):
        # A bare string would otherwise be iterated character by character.
        raise ValueError(
            f"{what} must be an iterable of string datum ids, not a single "
            f"{type(ids).__name__}; wrap it in a list: [{ids!r}]"
        )
    if isinstance(ids, pa.ChunkedArray | pa.Array):
        values = ids.to_pylist()
    elif isinstance(ids, np.ndarray):
        values = ids.tolist()  # np.str_ -> str, and surfaces non-str elements for the check
    else:
        values = list(ids)
    # Fast path (a C-level pass) for the usual all-plain-str case; 1M ids in ~20 ms.
    if not set(map(type, values)) <= {str}:
        bad = [v for v in values if not isinstance(v, str)]
        if bad:
            kinds = sorted({type(v).__name__ for v in bad})
            raise ValueError(
                f"Datum ids must be strings; {len(bad)} of {len(values)} are not "
                f"(types: {', '.join(kinds)}; e.g. {_preview(bad)})"
            )
        # str subclasses (np.str_) are stored as plain str so sqlite3 binds them.
        values = [v if type(v) is str else str(v) for v in values]
    return list(dict.fromkeys(values)) if dedupe else values


class BaseTagStore(ABC):
    """Tags over a dataset's datum ids: the API every backend shares.

    Each public method validates its input first (a refused call writes nothing) and then runs
    as exactly one transaction of the backend, whose methods (``_read_tags``, ``_add``, ...)
    are the only SQL. Safe from several threads and processes at once: backends open a
    connection per call, so nothing is shared between threads or across ``fork()``.

    Args:
        valid_ids: Returns the dataset's current datum ids (best as a pyarrow array, which is
            used as is); :meth:`add` and :meth:`replace_members` reject ids not among them.
            ``None`` disables the check.
    """

    #: The backend's migrations: ``MIGRATIONS[i]`` takes the tables from version ``i`` to
    #: ``i + 1``, so this code's schema version is their number.
    MIGRATIONS: tuple[tuple[str, ...], ...] = ()

    def __init__(self, valid_ids: Callable[[], Collection[str]] | None = None) -> None:
        self.valid_ids = valid_ids

    @property
    def schema_version(self) -> int:
        """The schema version this code writes (and the newest it can open)."""
        return len(self.MIGRATIONS)

    # -- what a backend provides, each call one transaction -----------------------------------

    @abstractmethod
    def _schema_location(self) -> str:
        """Where the tables are, as the user set it (the setting or the file), for errors."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether this dataset's store has been created (has ever held a tag)."""

    @abstractmethod
    def _read_tags(self) -> list[tuple]:
        """``(tag_id, name, created, color, description, count)`` per tag, creation order."""

    @abstractmethod
    def _add(self, names: list[str], ids: list[str]) -> int:
        """Create missing tags and add the memberships; the number of new memberships."""

    @abstractmethod
    def _replace(self, name: str, ids: list[str], description: str) -> None:
        """Create ``name`` if missing and make ``ids`` exactly its members."""

    @abstractmethod
    def _remove(self, names: list[str], ids: list[str] | None) -> int:
        """Untag ``ids`` (or, when ``None``, delete the tags); unknown names raise
        :meth:`_unknown_tag_error` and write nothing. The number of memberships removed."""

    @abstractmethod
    def _members(self, name: str) -> list[str]:
        """The sorted ids in ``name``; an unknown name raises :meth:`_unknown_tag_error`."""

    @abstractmethod
    def _all_members(self) -> dict[str, list[str]]:
        """Every tag's ids, tags in creation order, from one snapshot."""

    @abstractmethod
    def _counts(self) -> dict[str, int]:
        """Tag name -> member count, creation order."""

    # -- shared helpers -----------------------------------------------------------------------

    def _check_schema(self, version: int) -> None:
        """Refuse tables of a newer schema than this code knows (one line, naming where)."""
        if version > self.schema_version:
            raise NewerSchemaError(
                f"{self._schema_location()} holds tags of schema version {version}, written by "
                f"a newer atlas-assets (this one knows up to version {self.schema_version}); "
                "upgrade atlas-assets to use it. Nothing was read or written."
            )

    def _migrate(self, con: Any, version: int) -> None:
        """Bring tables at ``version`` to :attr:`schema_version` with the missing migrations, in
        order, inside the caller's transaction and lock (which records the new version); tables
        of a newer version raise first."""
        self._check_schema(version)
        for statements in self.MIGRATIONS[version:]:
            for statement in statements:
                con.execute(statement)

    @staticmethod
    def _tag_row_to_dict(row: tuple) -> dict:
        tag_id, name, created, color, description, count = row
        return {
            "tag_name": name,
            "tag_id": tag_id,
            "metadata": {
                "created": created,
                "color": color,
                "description": description,
                "count": int(count),
            },
        }

    def _unknown_tag_error(self, known: Sequence[str], names: Sequence[str]) -> ValueError:
        listing = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
        which = ", ".join(repr(n) for n in names)
        return ValueError(
            f"Unknown tag{'s' if len(names) > 1 else ''} {which} in {self}; "
            f"known tags ({len(known)}): {listing or 'none'}"
        )

    def _check_valid_ids(self, ids: list[str]) -> None:
        if self.valid_ids is None or not ids:
            return
        valid = self.valid_ids()
        if not isinstance(valid, pa.ChunkedArray | pa.Array):
            valid = pa.array(list(valid), type=pa.string())
        # Hash join in Arrow: no million-element Python set per call.
        known = pc.is_in(pa.array(ids, type=pa.string()), value_set=valid.cast(pa.string()))
        mask = np.asarray(known.to_numpy(zero_copy_only=False), dtype=bool)
        unknown = [i for i, ok in zip(ids, mask, strict=True) if not ok]
        if unknown:
            raise ValueError(
                f"{len(unknown)} of {len(ids)} ids are not in the dataset: {_preview(unknown)}. "
                "Nothing was tagged."
            )

    # -- public API -------------------------------------------------------------------------

    def get_tags(self) -> list[dict]:
        """All tags in creation order.

        Returns:
            ``[{"tag_name", "tag_id", "metadata": {"created", "color", "description", "count"}}]``
            where ``created`` is an ISO-8601 UTC time and ``count`` the number of tagged datums.
        """
        return [self._tag_row_to_dict(r) for r in self._read_tags()]

    def add(self, ids: Iterable[str], tags: str | Iterable[str]) -> int:
        """Tag datums, creating any tags that do not exist yet.

        Args:
            ids: Datum ids (strings). Must be non-empty and, when ``valid_ids`` was given, all
                in the dataset. Duplicates and already-tagged ids are fine.
            tags: A tag name or several.

        Returns:
            The number of new (datum, tag) memberships; ``0`` when everything was already tagged.

        Raises:
            ValueError: On invalid ids or tag names; nothing is written.
        """
        names = _normalize_tags(tags)
        id_list = _normalize_ids(ids)
        if not id_list:
            raise ValueError("add() needs at least one datum id; got an empty list")
        self._check_valid_ids(id_list)
        return self._add(names, id_list)

    def replace_members(self, tag: str, ids: Iterable[str], *, description: str = "") -> int:
        """Make ``ids`` exactly the members of ``tag`` (created if needed), in one transaction.

        For tags derived from a resource (e.g. duplicate candidates), so readers never see the
        tag half rewritten. Returns the new member count.
        """
        name = _normalize_tags(tag)[0]
        id_list = _normalize_ids(ids)
        self._check_valid_ids(id_list)
        self._replace(name, id_list, description)
        return len(id_list)  # already de-duplicated

    def remove(
        self,
        ids: Iterable[str] | None,
        tags: str | Iterable[str],
        delete_all: bool = False,
    ) -> int:
        """Untag datums, or with ``delete_all=True`` delete the tags themselves.

        Args:
            ids: Datum ids to untag. Ids that are not in the tag (or no longer in the dataset)
                are ignored. Ignored, and may be ``None``, when ``delete_all`` is True.
            tags: A tag name or several; all must exist.
            delete_all: Delete each tag and all of its memberships.

        Returns:
            The number of (datum, tag) memberships removed.

        Raises:
            ValueError: On an unknown tag, invalid ids or tag names, or no ids without
                ``delete_all``; nothing is written.
        """
        names = _normalize_tags(tags)
        id_list: list[str] | None = None
        if not delete_all:
            if ids is None:
                raise ValueError(
                    "remove() needs the ids to untag; pass delete_all=True to delete the whole tag"
                )
            id_list = _normalize_ids(ids)
            if not id_list:
                raise ValueError(
                    "remove() got an empty list of ids; pass delete_all=True to delete the "
                    "whole tag"
                )
        return self._remove(names, id_list)

    def get_datums_in_tag(self, tag_name: str) -> list[str]:
        """The ids of all datums with tag ``tag_name``, sorted.

        Raises:
            ValueError: If no tag of that name exists (the message lists the known tags).
        """
        _check_tag_name(tag_name)
        return self._members(tag_name)

    def memberships(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Per tag (creation order), a bool array aligned to ``ids``: True where tagged.

        Ids not in the store (or not in the dataset) are simply False; duplicates in ``ids``
        get the same value. All tags are read from one snapshot.
        """
        id_list = _normalize_ids(ids, dedupe=False)
        id_arr = pa.array(id_list, type=pa.string())
        members = self._all_members()
        # Arrow's hashed is_in: linear in len(ids) + tag size, no per-id Python work.
        return {
            name: np.asarray(
                pc.is_in(id_arr, value_set=pa.array(m, type=pa.string())).to_numpy(
                    zero_copy_only=False
                ),
                dtype=bool,
            )
            for name, m in members.items()
        }

    def counts(self) -> dict[str, int]:
        """Tag name -> number of tagged datums, in creation order (empty tags included)."""
        return self._counts()

    def drop(self) -> None:
        """Delete every tag of this dataset (when the dataset itself is deleted)."""
        names = list(self.counts()) if self.exists() else []
        if names:
            self._remove(names, None)


class TagStore(BaseTagStore):
    """The SQLite backend: one file per dataset, beside its data (the local default).

    Its schema version is the file's ``PRAGMA user_version``.

    Args:
        path: The SQLite file (created, with its schema, on first use; its directory must exist).
        valid_ids: See :class:`BaseTagStore`.
    """

    MIGRATIONS = _MIGRATIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        valid_ids: Callable[[], Collection[str]] | None = None,
    ) -> None:
        super().__init__(valid_ids)
        self.path = Path(path)
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"TagStore({str(self.path)!r})"

    def __str__(self) -> str:
        return f"tag store {self.path}"

    def _schema_location(self) -> str:
        return f"Tag file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def drop(self) -> None:
        """Delete the file (and SQLite's WAL and shared-memory files beside it)."""
        for suffix in ("", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    # -- connections and transactions ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"Cannot open tag store {self.path}: directory {self.path.parent} does not exist"
            )
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each operation is exactly
        # the transaction we wrote and the sqlite3 module never opens implicit ones.
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self._schema_ready:
                # A newer file is refused before anything (even the switch to WAL) is written.
                self._check_schema(self._stored_version(con))
                self._ensure_wal(con)
            # FULL: a commit the user saw succeed survives a power cut, not just a crash.
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA temp_store = MEMORY")
            if not self._schema_ready:
                self._ensure_schema(con)
        except BaseException:
            con.close()
            raise
        return con

    def _ensure_wal(self, con: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent, so a no-op once any opener has done it)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.001
        while True:
            mode = str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return
            try:
                mode = str(con.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                # The switch needs an exclusive lock and SQLite fails it at once, without the
                # busy handler, when another process is opening the fresh file too: retry.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
            if mode == "wal":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Could not put tag store {self.path} in WAL mode ({mode})")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @staticmethod
    def _stored_version(con: sqlite3.Connection) -> int:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if (
            version == 0
            and con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tags'"
            ).fetchone()
        ):
            return 1  # tables made before the version was recorded: version 1's
        return version

    def _ensure_schema(self, con: sqlite3.Connection) -> None:
        recorded = "PRAGMA user_version"
        if con.execute(recorded).fetchone()[0] != self.schema_version:
            # Several processes may open an old or fresh file at once: migrate under the write
            # lock and re-read the version there, so exactly one of them does it.
            con.execute("BEGIN IMMEDIATE")
            try:
                self._migrate(con, self._stored_version(con))
                if con.execute(recorded).fetchone()[0] != self.schema_version:
                    con.execute(f"PRAGMA user_version = {self.schema_version}")
                con.execute("COMMIT")
            except BaseException:
                # Some errors (e.g. disk full) already rolled SQLite back; don't mask them.
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        self._schema_ready = True

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction: committed on success, rolled back on any error."""
        con = self._connect()
        try:
            # IMMEDIATE takes the write lock now, so checks made inside the transaction still
            # hold at commit; a deferred read transaction still gives a consistent WAL snapshot.
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                # Upgraded by a newer process since this one opened the file? Then refuse.
                self._check_schema(con.execute("PRAGMA user_version").fetchone()[0])
                yield con
            except BaseException:
                # Some errors (e.g. disk full) already rolled SQLite back; don't mask them.
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    @staticmethod
    def _load_batch(con: sqlite3.Connection, ids: list[str]) -> None:
        """Put ``ids`` into ``temp._batch`` for set-based joins (one executemany, not N queries)."""
        con.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _batch (datum_id TEXT PRIMARY KEY) WITHOUT ROWID"
        )
        con.execute("DELETE FROM temp._batch")
        con.executemany("INSERT OR IGNORE INTO temp._batch VALUES (?)", ((i,) for i in ids))

    @staticmethod
    def _tag_seqs(con: sqlite3.Connection) -> dict[str, int]:
        return dict(con.execute("SELECT name, seq FROM tags ORDER BY seq"))

    def _create_in(self, con: sqlite3.Connection, name: str, description: str | None = None) -> int:
        """Create ``name`` if missing (inside the caller's write transaction); its ``seq``.

        An existing tag keeps its id, creation time, colour and description.
        """
        row = con.execute("SELECT seq FROM tags WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        cur = con.execute(
            "INSERT INTO tags (tag_id, name, created, description) VALUES (?, ?, ?, ?)",
            (str(uuid.uuid4()), name, _now(), description),
        )
        seq = int(cur.lastrowid)
        # Colours follow creation order (seq is AUTOINCREMENT: never reused after a delete).
        con.execute(
            "UPDATE tags SET color = ? WHERE seq = ?", (PALETTE[(seq - 1) % len(PALETTE)], seq)
        )
        return seq

    # -- the backend's transactions -----------------------------------------------------------

    def _read_tags(self) -> list[tuple]:
        with self._transaction(write=False) as con:
            return con.execute(
                "SELECT t.tag_id, t.name, t.created, t.color, t.description, "
                "(SELECT COUNT(*) FROM memberships m WHERE m.tag_seq = t.seq) "
                "FROM tags t ORDER BY t.seq"
            ).fetchall()

    def _add(self, names: list[str], ids: list[str]) -> int:
        with self._transaction(write=True) as con:
            self._load_batch(con, ids)
            added = 0
            for name in names:
                seq = self._create_in(con, name)
                # rowcount counts only rows actually inserted, not those IGNOREd as duplicates.
                added += con.execute(
                    "INSERT OR IGNORE INTO memberships (tag_seq, datum_id) "
                    "SELECT ?, datum_id FROM temp._batch",
                    (seq,),
                ).rowcount
            return added

    def _replace(self, name: str, ids: list[str], description: str) -> None:
        with self._transaction(write=True) as con:
            seq = self._create_in(con, name, description=description)
            con.execute("DELETE FROM memberships WHERE tag_seq = ?", (seq,))
            self._load_batch(con, ids)
            con.execute(
                "INSERT OR IGNORE INTO memberships (tag_seq, datum_id) "
                "SELECT ?, datum_id FROM temp._batch",
                (seq,),
            )

    def _remove(self, names: list[str], ids: list[str] | None) -> int:
        with self._transaction(write=True) as con:
            seqs = self._tag_seqs(con)
            missing = [n for n in names if n not in seqs]
            if missing:
                raise self._unknown_tag_error(list(seqs), missing)
            if ids is not None:
                self._load_batch(con, ids)
            removed = 0
            for name in names:
                seq = seqs[name]
                if ids is None:
                    removed += con.execute(
                        "DELETE FROM memberships WHERE tag_seq = ?", (seq,)
                    ).rowcount
                    con.execute("DELETE FROM tags WHERE seq = ?", (seq,))
                else:
                    removed += con.execute(
                        "DELETE FROM memberships WHERE tag_seq = ? "
                        "AND datum_id IN (SELECT datum_id FROM temp._batch)",
                        (seq,),
                    ).rowcount
            return removed

    def _members(self, name: str) -> list[str]:
        with self._transaction(write=False) as con:
            row = con.execute("SELECT seq FROM tags WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown_tag_error(list(self._tag_seqs(con)), [name])
            return [
                r[0]
                for r in con.execute(
                    "SELECT datum_id FROM memberships WHERE tag_seq = ? ORDER BY datum_id",
                    (row[0],),
                )
            ]

    def _all_members(self) -> dict[str, list[str]]:
        with self._transaction(write=False) as con:
            return {
                name: [
                    r[0]
                    for r in con.execute(
                        "SELECT datum_id FROM memberships WHERE tag_seq = ?", (seq,)
                    )
                ]
                for name, seq in self._tag_seqs(con).items()
            }

    def _counts(self) -> dict[str, int]:
        with self._transaction(write=False) as con:
            return {
                name: int(n)
                for name, n in con.execute(
                    "SELECT t.name, (SELECT COUNT(*) FROM memberships m WHERE m.tag_seq = t.seq) "
                    "FROM tags t ORDER BY t.seq"
                )
            }
