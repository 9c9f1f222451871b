"""The inbox: files dropped into ``$ATLAS_HOME/inbox/<dataset>/`` become dataset batches.

Each file is ingested once, then moved to ``.ingested/``; a file that cannot be read or is
refused moves to ``.failed/`` with a ``.error.txt`` note, so it is reported, never retried
forever, and earlier data stays as it was. An optional ``atlas.json`` in the folder names the
id field and index options (``{"unique_id_field": "id", "indexed_field": "text", ...}``);
without it ids are generated and the longest text column is indexed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from atlas_assets.lib.sources import SUPPORTED, read_table_file
from atlas_assets.store import dataset_paths, partition_paths
from atlas_assets.store.layout import inbox_dir

CONFIG_FILE = "atlas.json"


@dataclass(frozen=True)
class Ingested:
    """What happened to one dropped file."""

    dataset: str  # partition key, "" when the folder name is not a valid dataset name
    file: str
    rows: int = 0
    error: str | None = None


def _move(path: Path, folder: str, note: str | None = None) -> None:
    target = path.parent / folder
    target.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = target / f"{stamp}-{path.name}"
    shutil.move(path, moved)
    if note is not None:
        moved.with_name(moved.name + ".error.txt").write_text(note + "\n")


def _longest_text_column(frame) -> str | None:
    texts = [c for c in frame.columns if frame[c].dtype == object or str(frame[c].dtype) == "str"]
    lengths = {c: frame[c].astype(str).str.len().mean() for c in texts}
    return max(lengths, key=lengths.get) if lengths else None


def ingest_file(path: Path, identifier: str) -> int:
    """Add one file to a dataset (creating and configuring it if new); returns rows added."""
    from atlas_assets.reader import AtlasDataset

    config_path = path.parent / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    id_field = config.pop("unique_id_field", None)
    ds = AtlasDataset(identifier, unique_id_field=id_field)
    frame = read_table_file(path, id_field)
    ds.add_data(frame)
    if not ds.maps:
        indexed = config.pop("indexed_field", None) or _longest_text_column(frame)
        ds.configure_index(indexed_field=indexed, **config)
    return len(frame)


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


def scan_inbox(home: Path | None = None) -> list[Ingested]:
    """Ingest every supported file waiting in the inbox, oldest first."""
    results = []
    root = inbox_dir(home)
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        files = sorted(
            (f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(SUPPORTED)),
            key=lambda f: (f.stat().st_mtime, f.name),
        )
        if not files:
            continue
        try:
            # A folder name cannot hold '/': 'org.name' names a namespace, as partition keys do.
            try:
                paths = partition_paths(folder.name, home)
            except ValueError:
                paths = dataset_paths(folder.name, home)
            key = paths.partition_key
        except ValueError as err:
            results.extend(Ingested("", str(f), error=str(err)) for f in files)
            continue
        for f in files:
            try:
                rows = ingest_file(f, paths.identifier)
            except Exception as err:  # a bad file is reported and set aside, never retried
                _move(f, ".failed", f"{type(err).__name__}: {err}")
                results.append(Ingested(key, f.name, error=f"{type(err).__name__}: {err}"))
            else:
                _move(f, ".ingested")
                results.append(Ingested(key, f.name, rows=rows))
    return results
