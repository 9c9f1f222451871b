"""Reading user files (CSV, Parquet, JSON Lines) into DataFrames, ids kept as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SUPPORTED = (".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz", ".ndjson")


def read_table_file(path: str | Path, id_field: str | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or JSONL file; ``id_field`` is read as text (``0704.0001`` stays so).

    Text that is not valid UTF-8 raises a ``ValueError`` (for Parquet, naming column and rows).
    """
    path = Path(path)
    name = path.name.lower()
    dtype = {id_field: str} if id_field else None
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, dtype=dtype, keep_default_na=True)
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            from atlas_assets.lib.validate import check_arrow

            table = pq.read_table(path)
            check_arrow(table)  # pandas would fail on invalid UTF-8 without saying where
            return table.to_pandas()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return pd.read_json(path, lines=True, dtype=dtype)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name} is not UTF-8 text: {err}") from None
    except ValueError as err:
        raise ValueError(f"{path.name}: {err}") from None
    raise ValueError(f"unsupported file type {path.name!r}: expected one of {', '.join(SUPPORTED)}")
