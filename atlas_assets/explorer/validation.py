"""What may cross the explorer's HTTP boundary: request values coming in (JSON bodies, row
positions, queries, integers) and the parts of answers that a browser or a spreadsheet would
interpret (tag colours, CSV cells, error messages).

Every check raises ``ValueError`` with a message meant for the page; the server turns it into a
400. Nothing here touches a map or a file.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_QUERY_CHARS = 500
# JSON integers longer than this are refused while parsing: no row position or flag needs more,
# and Python would otherwise build (or refuse with advice about its own settings) huge ints.
MAX_INT_DIGITS = 19
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_START = "=+-@\t\r"
_FORMULA = r"^([=+\-@\t\r])"  # the same, for RE2
_HEX_COLOUR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# An absolute path in a message: "/" after a start, space, quote or bracket, then a component
# and another "/" ("org/name" and "http://host/x" do not match).
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=]))/[^\s'\"/]+/[^\s'\")\];,]*")


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number in the request body has {len(digits)} digits")
    return int(digits)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; too deep nesting and huge numbers are a ``ValueError``."""
    try:
        value = json.loads(body, parse_int=_parse_int, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("the request body is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError and the hooks above
        reason = str(err) if not isinstance(err, json.JSONDecodeError) else err.msg
        raise ValueError(f"the request body is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise ValueError("the request body must be a JSON object")
    return value


def check_int(raw: str | None, name: str, default: int) -> int:
    """A query-string integer (``default`` when absent)."""
    if raw is None:
        return default
    if not re.fullmatch(rf"-?[0-9]{{1,{MAX_INT_DIGITS}}}", raw.strip()):
        raise ValueError(f"{name} must be an integer, got {raw[:40]!r}")
    return int(raw)


def check_query(query: Any) -> str:
    """A search string: non-empty, at most :data:`MAX_QUERY_CHARS` characters."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the search query q must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(
            f"the search query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    return query.strip()


def check_indices(raw: Any, n: int) -> np.ndarray:
    """Row positions from a request: a list of integers in ``[0, n)``, de-duplicated."""
    if not isinstance(raw, list):
        raise ValueError("indices must be a JSON list of row positions")
    if len(raw) > n:
        raise ValueError(f"{len(raw)} indices given, but the map has {n} points")
    if not raw:
        return np.zeros(0, np.int64)
    if not all(type(v) is int for v in raw):
        bad = next(v for v in raw if type(v) is not int)
        raise ValueError(f"indices must be integers, got {str(bad)[:40]}")
    try:
        arr = np.asarray(raw, dtype=np.int64)
    except OverflowError:
        arr = None
    if arr is None or arr.min() < 0 or arr.max() >= n:
        low, high = min(raw), max(raw)
        raise ValueError(f"indices must be in [0, {n}); got {str(low)[:20]}..{str(high)[:20]}")
    return np.unique(arr)


def check_flag(raw: Any, name: str) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"{name} must be true or false")
    return raw


@lru_cache(maxsize=1)
def _named_colours() -> dict[str, str]:
    from matplotlib.colors import CSS4_COLORS  # the CSS Color Module's 148 names

    return {name.lower(): value.lower() for name, value in CSS4_COLORS.items()}


def safe_colour(colour: Any) -> str | None:
    """A stored tag colour as ``#rrggbb`` for the page, or None (the page's grey) for anything
    that is not a hex colour or a CSS colour name: the tag store accepts any string."""
    if not isinstance(colour, str):
        return None
    colour = colour.strip()
    if _HEX_COLOUR.fullmatch(colour):
        digits = colour[1:].lower()
        return "#" + (digits if len(digits) == 6 else "".join(c * 2 for c in digits))
    return _named_colours().get(colour.lower())


def neutralise_formulas(table: pa.Table) -> pa.Table:
    """Text cells (and column names) starting with ``= + - @``, a tab or a CR, prefixed with
    ``'`` so that a spreadsheet shows them as text instead of running them (OWASP)."""
    columns, names = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
            column = column.cast(pa.string())
            kind = pa.string()
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.replace_substring_regex(column, _FORMULA, r"'\1", max_replacements=1)
        columns.append(column)
        names.append("'" + field.name if field.name[:1] in FORMULA_START else field.name)
    return pa.table(columns, names=names)


def scrub_paths(message: str) -> str:
    """An error message without absolute file paths (a request must not learn the layout)."""
    return _PATH.sub("<path>", message)
