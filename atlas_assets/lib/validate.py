"""Validation of uploaded batches: every rule names the column and the first offending rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

GENERATED_ID_FIELD = "id_"
_SHOWN = 10  # offending rows listed in an error message


def _rows(rows: Iterable[int]) -> str:
    rows = list(rows)
    more = f" (first {_SHOWN} of {len(rows)})" if len(rows) > _SHOWN else ""
    return f"{rows[:_SHOWN]}{more}"


def _plain_types(table: pa.Table) -> pa.Table:
    """Large and dictionary-encoded strings as plain ones, so equal data has equal schemas.

    A column with no values at all (pandas reads an empty CSV column as float NaN) becomes the
    null type, which takes the type of the other batches.
    """
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if table.num_rows and column.null_count == table.num_rows:
            column = pa.nulls(table.num_rows)
        elif pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
        if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def to_table(data: Any) -> pa.Table:
    """A ``pd.DataFrame``, ``pa.Table`` or list of dicts as an Arrow table."""
    if isinstance(data, pa.Table):
        return _plain_types(data)
    if isinstance(data, pd.DataFrame):
        return _plain_types(pa.Table.from_pandas(data, preserve_index=False))
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return _plain_types(pa.Table.from_pylist(data))
    raise ValueError(
        "data must be a pandas DataFrame, a pyarrow Table or a list of dicts, "
        f"got {type(data).__name__}"
    )


def check_column_names(table: pa.Table) -> None:
    """Refuse ``_``-prefixed names (reserved for internals) and names equal ignoring case."""
    underscored = [c for c in table.column_names if c.startswith("_")]
    if underscored:
        raise ValueError(f"column names must not start with '_' (reserved): {underscored}")
    seen: dict[str, str] = {}
    for name in table.column_names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise ValueError(f"columns {other!r} and {name!r} differ only in case")


def string_ids(table: pa.Table, id_field: str) -> pa.Table:
    """The table with string ids; missing, null, empty or repeated ids are refused."""
    if id_field not in table.column_names:
        raise ValueError(
            f"id field {id_field!r} is not a column of the data; columns are {table.column_names}"
        )
    column = table.column(id_field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if not (pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
            raise ValueError(
                f"id field {id_field!r} must hold strings or integers, got type {column.type}"
            )
        column = column.cast(pa.string())
    ids = column.cast(pa.string()).to_pylist()
    bad = [i for i, v in enumerate(ids) if v is None or not v.strip()]
    if bad:
        raise ValueError(f"id field {id_field!r} has null or empty ids at rows {_rows(bad)}")
    first_row: dict[str, int] = {}
    repeats = []
    for row, value in enumerate(ids):
        if first_row.setdefault(value, row) != row:
            repeats.append(f"{value!r} at rows {first_row[value]} and {row}")
    if repeats:
        shown = "; ".join(repeats[:_SHOWN])
        raise ValueError(f"id field {id_field!r} repeats ids within the batch: {shown}")
    index = table.column_names.index(id_field)
    return table.set_column(index, pa.field(id_field, pa.string()), pa.array(ids, pa.string()))


def check_new_ids(ids: pa.Array | pa.ChunkedArray, stored: set[str], id_field: str) -> None:
    """Refuse ids that are already stored in the dataset."""
    clashes = [(row, v) for row, v in enumerate(ids.to_pylist()) if v in stored]
    if clashes:
        shown = ", ".join(f"{v!r} (row {row})" for row, v in clashes[:_SHOWN])
        raise ValueError(
            f"id field {id_field!r} has {len(clashes)} ids already in the dataset: {shown}"
        )


def check_schema(batch: pa.Schema, stored: pa.Schema | None) -> None:
    """Refuse a batch whose columns or types differ from the stored shards (null types unify)."""
    if stored is None:
        return
    names = set(stored.names)
    missing, extra = sorted(names - set(batch.names)), sorted(set(batch.names) - names)
    if missing or extra:
        raise ValueError(
            f"columns differ from the stored data: missing {missing}, unexpected {extra}"
        )
    for field in batch:
        want = stored.field(field.name).type
        if field.type != want and not (pa.types.is_null(field.type) or pa.types.is_null(want)):
            raise ValueError(
                f"column {field.name!r} has type {field.type} but the stored data has {want}"
            )


def check_embeddings(embeddings: Any, n_rows: int, stored_dim: int | None) -> np.ndarray:
    """Bring-your-own vectors: a finite ``(n_rows, d)`` float array matching stored dimensions."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(
            f"embeddings must be a 2-D array (one row per datum), got shape {arr.shape}"
        )
    if arr.shape[0] != n_rows:
        raise ValueError(f"embeddings have {arr.shape[0]} rows but the data has {n_rows}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"embeddings must be numeric, got dtype {arr.dtype}")
    if stored_dim is not None and arr.shape[1] != stored_dim:
        raise ValueError(
            f"embeddings have {arr.shape[1]} dimensions but stored ones have {stored_dim}"
        )
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ValueError(f"embeddings contain NaN or inf at rows {_rows(bad.tolist())}")
    zero = np.flatnonzero(~arr.any(axis=1))
    if zero.size:  # a zero vector has no direction: it cannot be normalised or compared
        raise ValueError(f"embeddings are all zero at rows {_rows(zero.tolist())}")
    return arr.astype(np.float32)
