"""Validation of uploaded batches: every rule names the column and the first offending rows."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

GENERATED_ID_FIELD = "id_"
# The largest text or binary cell accepted, in bytes: a datum is a document, not a corpus (one
# 50 MB cell once made a 61-row build peak at 6.8 GB while its keywords were counted).
MAX_CELL_BYTES = 1 << 20
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


def _value_problems(name: str, values: list[Any]) -> str:
    """Why a column of Python values has no Arrow type: lone surrogates or mixed types, by row."""
    surrogates = [
        row
        for row, v in enumerate(values)
        if isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v)
    ]
    if surrogates:
        return (
            f"column {name!r} has text that is not valid Unicode (lone surrogates) at rows "
            f"{_rows(surrogates)}"
        )
    rows_by_type: dict[str, list[int]] = {}
    for row, v in enumerate(values):
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            rows_by_type.setdefault(type(v).__name__, []).append(row)
    if len(rows_by_type) > 1:
        kinds = sorted(rows_by_type.items(), key=lambda kv: -len(kv[1]))
        shown = "; ".join(f"{kind} at rows {_rows(rows)}" for kind, rows in kinds)
        return f"column {name!r} mixes value types: {shown}"
    return f"column {name!r} cannot be stored"


def _columns_to_table(columns: dict[str, list[Any]]) -> pa.Table:
    """Python values column by column; a column Arrow cannot type is named with its rows."""
    arrays = []
    for name, values in columns.items():
        try:
            arrays.append(pa.array(values, from_pandas=True))
        except (pa.ArrowException, UnicodeError, TypeError, ValueError) as err:
            raise ValueError(f"{_value_problems(name, values)} ({err})") from None
    return pa.Table.from_arrays(arrays, names=list(columns))


def check_arrow(table: pa.Table) -> None:
    """Validate Arrow data fully (offsets, UTF-8); a broken column is named with its rows."""
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            column.validate(full=True)
        except pa.ArrowInvalid as err:
            kind = column.type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                raw = column.cast(
                    pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
                )
                rows = [
                    row for row, v in enumerate(raw.to_pylist()) if v is not None and not _utf8(v)
                ]
                if rows:
                    raise ValueError(
                        f"column {name!r} has strings that are not valid UTF-8 at rows "
                        f"{_rows(rows)}"
                    ) from None
            raise ValueError(f"column {name!r} is not valid Arrow data: {err}") from None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_table(data: Any) -> pa.Table:
    """A ``pd.DataFrame``, ``pa.Table`` or list of dicts as a fully validated Arrow table.

    Values Arrow cannot store (mixed types in a column, lone surrogates, invalid UTF-8) raise a
    ``ValueError`` naming the column and rows.
    """
    if isinstance(data, pa.Table):
        check_arrow(data)
        return _plain_types(data)
    if isinstance(data, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, UnicodeError, TypeError, ValueError):
            table = _columns_to_table(
                {str(c): data[c].astype(object).tolist() for c in data.columns}
            )
        check_arrow(table)
        return _plain_types(table)
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        try:
            table = pa.Table.from_pylist(data)
        except (pa.ArrowException, UnicodeError, TypeError, ValueError):
            names = list(dict.fromkeys(key for row in data for key in row))
            table = _columns_to_table({n: [row.get(n) for row in data] for n in names})
        check_arrow(table)
        return _plain_types(table)
    raise ValueError(
        "data must be a pandas DataFrame, a pyarrow Table or a list of dicts, "
        f"got {type(data).__name__}"
    )


def check_cell_sizes(table: pa.Table, limit: int = MAX_CELL_BYTES) -> None:
    """Refuse text or binary cells over ``limit`` bytes (:data:`MAX_CELL_BYTES`)."""
    import pyarrow.compute as pc

    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
        ):
            continue
        sizes = pc.binary_length(column).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(np.nan_to_num(sizes.astype(float), nan=0.0) > limit)
        if rows.size:
            raise ValueError(
                f"column {name!r} has cells over the limit of {limit:,} bytes at rows "
                f"{_rows(rows.tolist())} (largest {int(np.nanmax(sizes)):,} bytes): "
                "split long documents into several rows"
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
    check_id_text(ids, f"id field {id_field!r}", "rows")
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


def check_id_text(ids: list[str], what: str, where: str = "rows", first: int = 0) -> None:
    """Refuse ids with surrounding whitespace or control characters: ``" r1"`` is not ``"r1"``,
    and the two must never be taken for each other."""
    bad = [
        first + i
        for i, v in enumerate(ids)
        if v != v.strip() or any(unicodedata.category(c) == "Cc" for c in v)
    ]
    if bad:
        example = ids[bad[0] - first]
        raise ValueError(
            f"{what} has ids with surrounding whitespace or control characters at {where} "
            f"{_rows(bad)} (first: {example!r})"
        )


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
    # Checked again as stored (float32): 1e300 overflows to inf and 1e-300 underflows to zero,
    # and a vector whose float32 norm is zero or infinite cannot be normalised by a build.
    with np.errstate(over="ignore", under="ignore"):
        stored = arr.astype(np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", stored, stored))
    bad = np.flatnonzero(~np.isfinite(stored).all(axis=1) | ~np.isfinite(norms))
    if bad.size:
        raise ValueError(
            f"embeddings overflow float32 (the stored type) at rows {_rows(bad.tolist())}: "
            "values must stay within +-3.4e38 and their norm too"
        )
    zero = np.flatnonzero(~stored.any(axis=1))
    if zero.size:  # a zero vector has no direction: it cannot be normalised or compared
        raise ValueError(
            f"embeddings are all zero at rows {_rows(zero.tolist())} (as float32, the stored type)"
        )
    tiny = np.flatnonzero(norms == 0)
    if tiny.size:
        raise ValueError(
            f"embeddings are too small to normalise in float32 (the stored type) at rows "
            f"{_rows(tiny.tolist())}: scale them up"
        )
    return stored
