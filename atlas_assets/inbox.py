"""The inbox: files dropped into ``$ATLAS_HOME/inbox/<dataset>/`` become dataset batches.

Writers should write elsewhere and then move the finished file in (a rename). A file is taken
only once it has not changed for :data:`SETTLE_SECONDS`, and only if it did not change while it
was read; hidden names and ``*.part`` / ``*.tmp`` are never taken. Everything is validated
before anything is added, and the batch is stored with the file's content hash, so a file whose
rows are already stored (a crash before it was moved away) adds nothing the second time.

A file is then moved to ``.ingested/``; a file that cannot be read or is refused moves to
``.failed/`` with a ``.error.txt`` note, so it is reported once, never retried, and earlier
data stays as it was. So are symbolic links (never followed), folders, files of other types,
and files in the inbox root (``inbox/.failed/``). An optional ``atlas.json`` in the folder names
the id field and index options (``{"unique_id_field": "id", "indexed_field": "text", ...}``);
without it ids are generated and the longest text column is indexed.

On a remote store (``ATLAS_HOME=s3://...``) the inbox is the object store's: settled objects are
downloaded into the mirror's inbox first, taken as above, then moved on the object store as
their copies were (:func:`atlas_assets.store.remote.pull_inbox`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from atlas_assets.lib import validate
from atlas_assets.lib.sources import SUPPORTED, read_table_file
from atlas_assets.store import DatasetPaths, dataset_paths, partition_paths, remote
from atlas_assets.store.layout import inbox_dir

CONFIG_FILE = "atlas.json"
# A file must be unchanged this long before it is taken: a writer still appending to it keeps
# moving its modification time. Writing elsewhere and renaming into the inbox needs no wait.
SETTLE_SECONDS = 10.0
IN_PROGRESS = (".part", ".tmp")  # names of files still being written: never taken
_INDEX_KEYS = {
    "name",
    "indexed_field",
    "topic_model",
    "duplicate_detection",
    "embedding_model",
    "projection",
    "reuse_embeddings_from_index",
}


@dataclass(frozen=True)
class Ingested:
    """What happened to one dropped file."""

    dataset: str  # partition key, "" when the folder name is not a valid dataset name
    file: str
    rows: int = 0
    error: str | None = None
    note: str | None = None  # e.g. "already ingested": nothing added, no error
    # The file and where it was moved (.ingested/ or .failed/), if it was.
    moved: tuple[Path, Path] | None = field(default=None, compare=False, repr=False)


def _move(path: Path, target: Path, note: str | None = None) -> tuple[Path, Path]:
    target.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved, n = target / f"{stamp}-{path.name}", 1
    while moved.exists() or moved.is_symlink():  # never overwrite an earlier file of that name
        moved, n = target / f"{stamp}-{n}-{path.name}", n + 1
    shutil.move(path, moved)  # a symbolic link moves as a link
    if note is not None:
        moved.with_name(moved.name + ".error.txt").write_text(note + "\n")
    return path, moved


def _longest_text_column(table: pa.Table) -> str | None:
    lengths = {
        name: sum(len(v) for v in column.to_pylist() if v is not None)
        for name, column in zip(table.column_names, table.columns, strict=True)
        if pa.types.is_string(column.type)
    }
    return max(lengths, key=lengths.get) if lengths else None


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if path.is_symlink():
        raise ValueError(f"{CONFIG_FILE} is a symbolic link: links are not followed")
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{CONFIG_FILE} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_FILE} must hold an object, got {type(config).__name__}")
    unknown = sorted(set(config) - _INDEX_KEYS - {"unique_id_field"})
    if unknown:
        raise ValueError(
            f"{CONFIG_FILE} has unknown keys {unknown}; expected some of "
            f"{sorted(_INDEX_KEYS | {'unique_id_field'})}"
        )
    return config


def _check_index_config(config: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """The index options of ``atlas.json``, checked against the batch before anything is added."""
    from atlas_assets.options import (
        NomicDuplicatesOptions,
        NomicEmbedOptions,
        NomicProjectOptions,
        NomicTopicOptions,
        coerce_options,
    )

    options = {k: v for k, v in config.items() if k in _INDEX_KEYS}
    field = options.get("indexed_field")
    if field is not None and field not in schema.names:
        raise ValueError(
            f"{CONFIG_FILE}: indexed_field {field!r} is not a column; columns are {schema.names}"
        )
    if field is not None and not pa.types.is_string(schema.field(field).type):
        raise ValueError(
            f"{CONFIG_FILE}: indexed_field {field!r} must be a text column, "
            f"got {schema.field(field).type}"
        )
    model = options.get("embedding_model")
    for kind, argument, value in (
        (
            NomicEmbedOptions,
            "embedding_model",
            {"model": model} if isinstance(model, str) else model,
        ),
        (NomicProjectOptions, "projection", options.get("projection")),
        (NomicTopicOptions, "topic_model", options.get("topic_model", True)),
        (NomicDuplicatesOptions, "duplicate_detection", options.get("duplicate_detection", True)),
    ):
        try:
            coerce_options(kind, value, argument=argument)
        except ValueError as err:
            raise ValueError(f"{CONFIG_FILE}: {err}") from None
    return options


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


class _Changed(Exception):
    """The file changed while it was read: a writer is still at it, try at the next scan."""


def ingest_file(path: Path, identifier: str) -> int:
    """Add one file to a dataset (creating and configuring it if new); returns rows added.

    The file, ``atlas.json`` and the index options are all checked before anything is added;
    a file whose content is already stored adds nothing (0).
    """
    from atlas_assets.reader import AtlasDataset

    before = path.stat()
    config = _read_config(path.parent)
    id_field = config.get("unique_id_field")
    digest = _digest(path)
    table = validate.to_table(read_table_file(path, id_field))
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise _Changed(path.name)
    ds = AtlasDataset(identifier, unique_id_field=id_field)
    options = None
    if not ds.maps:
        options = _check_index_config(config, table.schema)
        options.setdefault("indexed_field", _longest_text_column(table))
    rows = ds._add(table, source=digest)
    if options is not None:  # also after a crash that stored the rows but not the index
        ds.configure_index(**options)
    return rows


def refresh_source(identifier: str, home: Path | None = None) -> Ingested | None:
    """Re-read a dataset's bound source; append rows with new ids. None if it has no source."""
    from glob import glob

    from atlas_assets.reader import AtlasDataset
    from atlas_assets.store.datasets import load_meta, read_shards

    paths = dataset_paths(identifier, home)
    source = (load_meta(paths) or {}).get("source")
    if not source:
        return None
    ds = AtlasDataset(paths.identifier)
    id_field = ds.id_field
    try:
        frames = [read_table_file(f, id_field) for f in sorted(glob(source["glob"]))]
        if not frames:
            raise FileNotFoundError(f"no file matches {source['glob']!r}")
        import pandas as pd

        frame = pd.concat(frames, ignore_index=True)
        stored = read_shards(paths, [id_field])
        known = set(stored.column(id_field).to_pylist()) if stored is not None else set()
        fresh = frame[~frame[id_field].astype(str).isin(known)]
        if len(fresh):
            ds.add_data(fresh)
        return Ingested(paths.partition_key, source["glob"], rows=len(fresh))
    except Exception as err:  # reported by the schedule; the stored data is untouched
        return Ingested(paths.partition_key, source["glob"], error=f"{type(err).__name__}: {err}")


def _report(path: Path, target: Path, key: str, why: str) -> Ingested:
    """Set aside something the inbox does not take, with a note, so it is reported once."""
    return Ingested(key, path.name, error=why, moved=_move(path, target, why))


def _scan_folder(folder: Path, paths: DatasetPaths, settle: float, now: float) -> list[Ingested]:
    results = []
    key = paths.partition_key
    failed = folder / ".failed"
    entries = sorted(folder.iterdir(), key=lambda f: (f.lstat().st_mtime, f.name))
    for f in entries:
        name = f.name.lower()
        if f.name.startswith(".") or name.endswith(IN_PROGRESS) or f.name == CONFIG_FILE:
            continue
        if f.is_symlink():
            results.append(_report(f, failed, key, "symbolic links are not followed"))
        elif f.is_dir():
            results.append(_report(f, failed, key, "folders inside a dataset folder are not read"))
        elif not name.endswith(SUPPORTED):
            results.append(
                _report(f, failed, key, f"not a data file: expected one of {', '.join(SUPPORTED)}")
            )
        elif now - f.stat().st_mtime >= settle:
            try:
                rows = ingest_file(f, paths.identifier)
            except _Changed:
                continue
            except Exception as err:  # a bad file is reported and set aside, never retried
                results.append(_report(f, failed, key, f"{type(err).__name__}: {err}"))
            else:
                moved = _move(f, folder / ".ingested")
                note = None if rows else "already ingested: nothing added"
                results.append(Ingested(key, f.name, rows=rows, note=note, moved=moved))
    return results


def scan_inbox(home: Path | None = None, *, settle: float = SETTLE_SECONDS) -> list[Ingested]:
    """Ingest every settled data file waiting in the inbox, oldest first; report the rest.

    ``settle``: seconds a file must have been unchanged (:data:`SETTLE_SECONDS`).
    """
    results = []
    root = inbox_dir(home)
    # A remote store: its inbox's settled files come into the mirror's, then are taken as here.
    pulled = remote.pull_inbox(root, settle, skip=IN_PROGRESS, always=(CONFIG_FILE,)) or {}
    now = time.time()
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name.startswith(".") or entry.name.lower().endswith(IN_PROGRESS):
            continue
        if entry.is_symlink() or not entry.is_dir():
            why = (
                "symbolic links are not followed"
                if entry.is_symlink()
                else "files go in a dataset's folder: inbox/<dataset>/"
            )
            results.append(_report(entry, root / ".failed", "", why))
            continue
        try:
            # A folder name cannot hold '/': 'org.name' names a namespace, as partition keys do.
            try:
                paths = partition_paths(entry.name, home)
            except ValueError:
                paths = dataset_paths(entry.name, home)
        except ValueError as err:
            files = [f for f in entry.iterdir() if not f.name.startswith(".")]
            results.extend(Ingested("", str(f), error=str(err)) for f in files)
            continue
        results.extend(_scan_folder(entry, paths, settle, now))
    for r in results:  # the objects move as their copies did: never taken twice
        if r.moved is not None and r.moved[0] in pulled:
            remote.move_inbox_object(pulled[r.moved[0]], r.moved[1])
    return results
