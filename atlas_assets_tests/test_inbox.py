"""The inbox: only finished files are taken, everything is checked first, nothing twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from atlas_assets import AtlasDataset
from atlas_assets.inbox import SETTLE_SECONDS, scan_inbox
from atlas_assets.store import list_datasets


def settled(path: Path) -> Path:
    """Date the file back past the settling time, as if its writer had finished a while ago."""
    past = time.time() - SETTLE_SECONDS - 5
    os.utime(path, (past, past), follow_symlinks=False)
    return path


def folder(store: Path, name: str = "papers") -> Path:
    path = store / "inbox" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_file_still_being_written_is_not_taken(store, arxiv):
    papers = folder(store)
    (papers / "atlas.json").write_text(json.dumps({"unique_id_field": "arxiv_id"}))
    full = arxiv.head(100)[["arxiv_id", "title"]].to_csv(index=False)
    partial = papers / "batch.csv"
    partial.write_text(full[: len(full) // 3])  # a writer still at it, cut mid-field
    assert scan_inbox(store) == []
    assert partial.exists() and list_datasets() == []

    partial.write_text(full)  # finished, then left alone
    settled(partial)
    [result] = scan_inbox(store)
    assert (result.rows, result.error) == (100, None)
    assert AtlasDataset("papers").total_datums == 100


def test_hidden_and_in_progress_names_are_left_alone(store, arxiv):
    papers = folder(store)
    for name in (".hidden.csv", "batch.csv.part", "batch.csv.tmp", "upload.tmp"):
        arxiv.head(3).to_csv(papers / name, index=False)
        settled(papers / name)
    assert scan_inbox(store) == []
    assert list_datasets() == []
    assert sorted(p.name for p in papers.iterdir()) == [
        ".hidden.csv",
        "batch.csv.part",
        "batch.csv.tmp",
        "upload.tmp",
    ]


def test_a_file_whose_rows_are_stored_adds_nothing_the_second_time(store):
    papers = folder(store)
    pd.DataFrame({"text": ["one", "two", "three"]}).to_csv(papers / "rows.csv", index=False)
    settled(papers / "rows.csv")
    [first] = scan_inbox(store)
    assert first.rows == 3
    # a crash between storing the rows and moving the file leaves the file where it was
    [moved] = (papers / ".ingested").iterdir()
    shutil.copy2(moved, papers / "rows.csv")
    [again] = scan_inbox(store)
    assert (again.rows, again.error, again.note) == (0, None, "already ingested: nothing added")
    assert AtlasDataset("papers").total_datums == 3  # generated ids: would have been 6
    assert not (papers / "rows.csv").exists()
    assert len(list((papers / ".ingested").iterdir())) == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"indexed_field": "nope"}', "indexed_field 'nope' is not a column"),
        ('{"indexed_field": "n"}', "indexed_field 'n' must be a text column"),
        ('{"indexd_field": "text"}', "unknown keys \\['indexd_field'\\]"),
        ('{"projection": {"n_neigbors": 5}}', "invalid projection options"),
        ('{"unique_id_field": "id",', "not valid JSON"),
    ],
)
def test_everything_is_checked_before_anything_is_added(store, config, message):
    papers = folder(store)
    (papers / "atlas.json").write_text(config)
    pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "n": [1, 2]}).to_csv(
        papers / "rows.csv", index=False
    )
    settled(papers / "rows.csv")
    [result] = scan_inbox(store)
    assert result.rows == 0
    assert re.search(message, result.error)
    [note] = (papers / ".failed").glob("*.error.txt")
    assert re.search(message, note.read_text())
    assert list_datasets() == []


def test_symbolic_links_are_not_followed_out_of_the_inbox(store, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("id,text\n1,private\n")
    papers = folder(store)
    (papers / "link.csv").symlink_to(secret)
    settled(papers / "link.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settled(shutil.copy(secret, elsewhere / "rows.csv"))
    (store / "inbox" / "linked").symlink_to(elsewhere, target_is_directory=True)

    results = scan_inbox(store)
    assert sorted((r.file, r.error) for r in results) == [
        ("link.csv", "symbolic links are not followed"),
        ("linked", "symbolic links are not followed"),
    ]
    assert list_datasets() == []
    assert secret.read_text() == "id,text\n1,private\n"  # untouched, and never read
    assert (elsewhere / "rows.csv").exists()
    assert [p.name for p in (papers / ".failed").iterdir() if p.is_symlink()][0].endswith(
        "link.csv"
    )

    # nor is a linked atlas.json read
    (tmp_path / "config.json").write_text('{"unique_id_field": "id"}')
    (papers / "atlas.json").symlink_to(tmp_path / "config.json")
    (papers / "rows.csv").write_text("id,text\n1,one\n")
    settled(papers / "rows.csv")
    [result] = scan_inbox(store)
    assert result.error == "ValueError: atlas.json is a symbolic link: links are not followed"
    assert list_datasets() == []


def test_stray_files_are_reported_once(store):
    inbox = folder(store).parent
    (inbox / "loose.csv").write_text("id,text\n1,a\n")
    (inbox / "papers" / "sheet.xlsx").write_text("x")
    (inbox / "papers" / "sub").mkdir()
    results = scan_inbox(store)
    assert sorted((r.dataset, r.file, r.error.split(":")[0]) for r in results) == [
        ("", "loose.csv", "files go in a dataset's folder"),
        ("papers", "sheet.xlsx", "not a data file"),
        ("papers", "sub", "folders inside a dataset folder are not read"),
    ]
    assert len(list((inbox / ".failed").glob("*loose.csv.error.txt"))) == 1
    assert len(list((inbox / "papers" / ".failed").glob("*.error.txt"))) == 2
    assert scan_inbox(store) == []  # reported once, not at every tick
