"""Materialization metadata shared by every asset: counts, schema, preview, timing, parameters."""

from __future__ import annotations

import base64
import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

_PREVIEW_ROWS = 5
_PREVIEW_CHARS = 60


def table_metadata(table: pa.Table, *, seconds: float, params: dict[str, Any] | None = None):
    """Row count, column schema, a short markdown preview, timing and parameters."""
    preview = table.slice(0, _PREVIEW_ROWS).to_pandas()
    for col in preview.columns:
        # Text of any dtype (object, or pandas 3's str) and lists: one short line a cell.
        if not pd.api.types.is_numeric_dtype(preview[col]):
            preview[col] = preview[col].map(_cell)
    meta: dict[str, Any] = {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in table.schema]
        ),
        # disable_numparse: ids such as "0704.0001" are text, not the number 704.
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False, disable_numparse=True)),
        "seconds": round(seconds, 2),
    }
    if params is not None:
        meta["parameters"] = dg.MetadataValue.json(json.loads(json.dumps(params, default=str)))
    return meta


def _cell(value: Any) -> str:
    """A preview cell: one line, at most ``_PREVIEW_CHARS`` characters, no table-breaking ``|``."""
    text = " ".join(str(value).split())
    if len(text) > _PREVIEW_CHARS:
        text = text[: _PREVIEW_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def png_markdown(png: bytes, alt: str = "map") -> dg.MetadataValue:
    """A PNG inlined as markdown, which the Dagster UI renders as a picture."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
