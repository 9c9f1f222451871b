"""The `atlas` command: help, add, ls, index and demo, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_assets.cli import main
from atlas_assets.store import list_datasets


def test_console_script_help():
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([bin_dir / "atlas", "--help"], capture_output=True, text=True, check=True)
    for command in ("add", "index", "ls", "tag", "tags", "bind", "serve", "demo", "rm-batch"):
        assert command in out.stdout


@pytest.mark.parametrize(
    "command", ["add", "index", "ls", "tag", "tags", "bind", "serve", "demo", "rm-batch"]
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: atlas" in capsys.readouterr().out


def test_add_ls_index_round_trip(store, arxiv, tmp_path, capsys):
    csv = tmp_path / "papers.csv"
    arxiv.head(12).to_csv(csv, index=False)
    assert main(["add", "papers", str(csv), "--id-field", "arxiv_id"]) == 0
    assert "added 12 rows to papers" in capsys.readouterr().out
    assert main(["ls"]) == 0
    assert "papers  rows=12  dataset=missing" in capsys.readouterr().out
    assert main(["index", "papers", "--field", "title", "--seed", "1"]) == 0
    assert "built map 'papers' of papers: 12 datums" in capsys.readouterr().out
    main(["ls"])
    listing = capsys.readouterr().out
    assert "dataset=ok" in listing and "projected=ok" in listing
    # ids read from the file as text: 0704.0001 keeps its leading zero
    from atlas_assets import AtlasDataset

    assert AtlasDataset("papers").get_data(["0704.0001"])[0]["arxiv_id"] == "0704.0001"


def test_errors_are_one_line_and_exit_2(store, tmp_path, capsys):
    bad = tmp_path / "data.xlsx"
    bad.write_text("x")
    assert main(["add", "d", str(bad)]) == 2
    assert "unsupported file type 'data.xlsx'" in capsys.readouterr().err
    assert main(["index", "nothing-here", "--field", "text"]) == 2
    assert "has no data" in capsys.readouterr().err


def test_demo_builds_the_sample_map(store, capsys):
    assert main(["demo", "--rows", "25"]) == 0
    out = capsys.readouterr().out
    assert "Map built: arxiv-demo (25 datums)" in out
    assert str(store) in out and "dg dev" in out and "Depth-1 topics:" in out
    assert "deletion candidates in" in out
    assert main(["demo", "--rows", "25"]) == 0  # idempotent: reuses the stored data
    assert "Map built: arxiv-demo (25 datums)" in capsys.readouterr().out


def test_bind_records_the_source_and_needs_own_ids(store, arxiv, tmp_path, capsys):
    source = tmp_path / "papers.csv"
    arxiv.head(4).to_csv(source, index=False)
    assert main(["bind", "bound", str(source), "--id-field", "arxiv_id"]) == 0
    assert "bound is bound to" in capsys.readouterr().out
    assert main(["bind", "no-ids", str(source)]) == 2
    assert "unique_id_field" in capsys.readouterr().err


def test_index_options_take_the_embedding_mode():
    from atlas_assets.cli import _index_options, build_parser

    def options(*flags):
        return _index_options(build_parser().parse_args(["index", "papers", *flags]))

    assert options()["embedding_model"] is None  # the defaults
    assert options("--embed-mode", "static")["embedding_model"] == {"mode": "static"}
    assert options("--model", "m", "--embed-mode", "transformer")["embedding_model"] == {
        "model": "m",
        "mode": "transformer",
    }
    with pytest.raises(SystemExit):
        options("--embed-mode", "fast")


def test_refused_first_batches_and_missing_datasets_leave_nothing(store, tmp_path, capsys):
    csv = tmp_path / "rows.csv"
    csv.write_text("key,text\na,one\nb,two\n")
    assert main(["index", "nothing-here", "--field", "text"]) == 2
    assert main(["add", "rows", str(csv), "--id-field", "id"]) == 2
    assert "'id' is not a column" in capsys.readouterr().err
    assert list_datasets() == []
    assert main(["add", "rows", str(csv), "--id-field", "key"]) == 0  # the retry is accepted
    assert [p.identifier for p in list_datasets()] == ["rows"]


def test_tag_refuses_ids_with_surrounding_whitespace(store, tmp_path, capsys):
    from atlas_assets import AtlasDataset
    from atlas_assets.reader.tags import open_tag_store

    ds = AtlasDataset("tagged", unique_id_field="id")
    ds.add_data([{"id": "r1", "text": "one"}, {"id": "r2", "text": "two"}])
    ids = tmp_path / "ids.txt"
    ids.write_text("r2\n r1\n")
    assert main(["tag", "tagged", "keep", "--ids-from", str(ids)]) == 2
    assert "surrounding whitespace or control characters at lines [2]" in capsys.readouterr().err
    assert open_tag_store(ds._paths).counts() == {}  # nothing tagged, not even r2
    ids.write_text("r2\r\nr1\r\n\r\n")  # Windows line ends are line ends
    assert main(["tag", "tagged", "keep", "--ids-from", str(ids)]) == 0
    assert open_tag_store(ds._paths).counts() == {"keep": 2}


def test_rm_batch_removes_the_last_batches(store, tmp_path, capsys):
    from atlas_assets import AtlasDataset

    for name, ids in (("a.csv", "1,2"), ("b.csv", "3"), ("c.csv", "4,5")):
        rows = "".join(f"{i},text {i}\n" for i in ids.split(","))
        (tmp_path / name).write_text("id,text\n" + rows)
        assert main(["add", "batches", str(tmp_path / name), "--id-field", "id"]) == 0
    capsys.readouterr()
    assert main(["rm-batch", "batches", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "(2 rows)" in out and "(1 rows)" in out and "batches now has 2 rows" in out
    assert AtlasDataset("batches").total_datums == 2
    assert main(["add", "batches", str(tmp_path / "c.csv"), "--id-field", "id"]) == 0
    assert main(["rm-batch", "batches", "--count", "3"]) == 2
    assert "has 2 batches; cannot remove 3" in capsys.readouterr().err
    assert main(["rm-batch", "no-such-dataset"]) == 2


# `atlas index` in a child process, where Ctrl-C arrives after the last step, before the run
# ends: Dagster defers it there and used to forget it, so the build finished anyway.
CTRL_C_CHILD = """
import contextlib, os, signal, sys
import dagster._core.execution.api as api
from atlas_assets.cli import main
from atlas_assets.store import list_datasets

capture = api.capture_interrupts

@contextlib.contextmanager
def capture_then_ctrl_c():
    with capture():
        yield
        os.kill(os.getpid(), signal.SIGINT)

api.capture_interrupts = capture_then_ctrl_c
sys.exit(main(["index", "papers", "--field", "title", "--no-topics", "--no-duplicates"]))
"""


def test_ctrl_c_always_stops_atlas_index(store, arxiv):
    from atlas_assets import AtlasDataset

    AtlasDataset("papers", unique_id_field="arxiv_id").add_data(arxiv.head(12))
    child = subprocess.run(
        [sys.executable, "-c", CTRL_C_CHILD], capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 130, child.stderr[-2000:]
    assert "atlas index: interrupted" in child.stderr
    assert "built map" not in child.stdout
