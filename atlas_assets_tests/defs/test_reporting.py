"""Materialization metadata as the Dagster UI shows it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from atlas_assets.defs.reporting import table_metadata
from atlas_assets.store.files import fixed_list


def test_preview_keeps_text_ids_and_truncates_text() -> None:
    table = pa.table(
        {
            "arxiv_id": ["0704.0001", "0704.0002"],
            "abstract": ["a | b\nnext line " + "word " * 40, "short"],
            "embedding": fixed_list(np.ones((2, 3), dtype=np.float32)),
            "score": [1.5, 2.0],
        }
    )
    preview = table_metadata(table, seconds=0.1)["preview"].value
    lines = preview.splitlines()
    assert len(lines) == 4  # header, rule, two rows: no cell broke its line
    assert "0704.0001" in lines[2] and "0704.0002" in lines[3]  # not parsed as the number 704
    first_abstract = lines[2].split(" | ")[1].strip()
    assert first_abstract.startswith("a \\| b next line")  # one line, its "|" escaped
    assert len(first_abstract.replace("\\|", "|")) == 60 and first_abstract.endswith("…")
    assert all(line.count(" | ") == 3 for line in lines[2:])  # the text's own '|' is escaped
    assert "1.5" in lines[2]
