"""Reading user files: text that is not UTF-8 is refused with the column and rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atlas_assets.lib.sources import read_table_file


def test_parquet_strings_that_are_not_utf8_are_refused(tmp_path):
    raw = pa.array([b"fine", b"also fine", b"\xff\xfe broken"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # as a careless writer
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": text}), tmp_path / "bad.parquet")
    with pytest.raises(
        ValueError, match="column 'text' has strings that are not valid UTF-8 at rows \\[2\\]"
    ):
        read_table_file(tmp_path / "bad.parquet")


def test_csv_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("id,text\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv is not UTF-8 text"):
        read_table_file(tmp_path / "latin1.csv")


def test_good_files_read_with_text_ids(tmp_path):
    pq.write_table(pa.table({"id": ["0704.0001"], "n": [1]}), tmp_path / "ok.parquet")
    (tmp_path / "ok.csv").write_text("id,text\n0704.0001,one\n")
    assert read_table_file(tmp_path / "ok.parquet")["id"].tolist() == ["0704.0001"]
    assert read_table_file(tmp_path / "ok.csv", "id")["id"].tolist() == ["0704.0001"]
