"""The `atlas` command: help, add, ls, index and demo, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_assets.cli import main


def test_console_script_help():
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([bin_dir / "atlas", "--help"], capture_output=True, text=True, check=True)
    for command in ("add", "index", "ls", "tag", "tags", "bind", "serve", "demo"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["add", "index", "ls", "tag", "tags", "bind", "serve", "demo"])
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
