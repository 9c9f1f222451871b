"""What the explorer shows of one map: points, colour categories, topic labels, datums, search.

This is the read model only; what a request may carry is checked in
:mod:`atlas_assets.explorer.validation`.

Everything is read through the reader's accessors (a request never names a file) and cached per
map version, so even a 1M-point map is read once and then served from memory. Tags are the
exception: they are read live from the tag store, which notebooks may change at any time.
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atlas_assets.explorer.validation import check_query, neutralise_formulas, safe_colour
from atlas_assets.options import NomicEmbedOptions
from atlas_assets.reader.tags import open_tag_store
from atlas_assets.store import (
    ResourceNotReadyError,
    StaleResourceError,
    dataset_paths,
)
from atlas_assets.store.datasets import load_meta, stored_embedding_dim
from atlas_assets.store.resources import DUPLICATE_CLASS, TOPIC_COLUMN_PREFIX, projected_coords

# Distinct colours a colouring shows; rarer values share one "(other)" colour. Topics are all
# coloured (hues are generated past the palette): "(other)" would hide most of a big map.
MAX_CATEGORIES = 32
MAX_TOPIC_CATEGORIES = 1024
# A field is offered for colouring when a sample of it has at most this many distinct values.
CATEGORICAL_MAX_DISTINCT = 40
CATEGORICAL_SAMPLE = 5000
# Hover cards show long texts in full up to this many characters (a 1 MB cell would stall them).
MAX_FIELD_CHARS = 20_000
MAX_SEMANTIC_K = 1000
PREVIEW_RESULTS = 20
OTHER, NONE = "(other)", "(none)"
UNTAGGED = "(untagged)"


class NotReadyError(ResourceNotReadyError):
    """The dataset exists but has no map to show yet."""


@dataclass(frozen=True)
class Categories:
    """One colouring: a label per category and each datum's category code."""

    labels: list[str]
    kinds: list[str]  # "value", "other" or "none", so the page greys the catch-alls
    counts: list[int]
    codes: np.ndarray  # uint16, one per datum

    def header(self, by: str) -> dict[str, Any]:
        """The JSON half of the colour response."""
        return {
            "by": by,
            "categories": [
                {"label": lab, "kind": kind, "count": count}
                for lab, kind, count in zip(self.labels, self.kinds, self.counts, strict=True)
            ],
        }


def categorize(values: pa.Array | pa.ChunkedArray, limit: int = MAX_CATEGORIES) -> Categories:
    """Codes for a column: the ``limit - 1`` most frequent values, then "(other)", "(none)"."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    encoded = pc.dictionary_encode(values)
    dictionary = encoded.dictionary.to_pylist()
    idx = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(idx[idx >= 0], minlength=len(dictionary))
    order = np.argsort(-counts, kind="stable")
    keep = order if len(dictionary) <= limit else order[: limit - 1]
    labels = [str(dictionary[i]) for i in keep]
    kinds = ["value"] * len(labels)
    remap = np.full(max(len(dictionary), 1), len(labels), dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    if len(keep) < len(dictionary):
        labels.append(OTHER)
        kinds.append("other")
    none_code = len(labels)
    if (idx < 0).any():
        labels.append(NONE)
        kinds.append("none")
    codes = np.where(idx >= 0, remap[np.maximum(idx, 0)], none_code).astype(np.uint16)
    return Categories(labels, kinds, np.bincount(codes, minlength=len(labels)).tolist(), codes)


def normalize_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions scaled into [-1, 1] (the scatter library's device coordinates), aspect kept."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) == 0:
        return x.astype(np.float32), y.astype(np.float32)
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    half = max(x.max() - x.min(), y.max() - y.min()) / 2 * 1.05 or 1.0
    return ((x - cx) / half).astype(np.float32), ((y - cy) / half).astype(np.float32)


def display_value(value: Any) -> Any:
    """A cell as a JSON-safe value for the page (which shows it as text, never as HTML)."""
    if value is None or value is pd.NA or isinstance(value, bool | int):
        return None if value is pd.NA else value
    if isinstance(value, float):  # NaN is pandas' missing value; JSON has no inf
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        if len(value) > MAX_FIELD_CHARS:
            return value[:MAX_FIELD_CHARS] + f"... ({len(value) - MAX_FIELD_CHARS} more chars)"
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return display_value(json.dumps(value, default=str))


def _optional(read):
    """A resource that may not exist yet (another asset, not built, or stale): None if so."""
    try:
        return read()
    except (AttributeError, ResourceNotReadyError, StaleResourceError):
        return None


class MapView:
    """The explorer's read model of a dataset's (first) map.

    Raises ``ValueError`` for an invalid identifier (checked by the store), ``LookupError`` for
    a dataset that does not exist and :class:`NotReadyError` for one without a built map.
    """

    def __init__(self, identifier: str) -> None:
        from atlas_assets.reader import AtlasDataset

        self.paths = dataset_paths(identifier)  # validates: no request reaches a path unchecked
        if load_meta(self.paths) is None:
            raise LookupError(f"no dataset {self.paths.identifier!r} in the store")
        self.dataset = AtlasDataset(self.paths.identifier)
        maps = self.dataset.maps
        if not maps:
            raise NotReadyError(
                f"dataset {self.paths.identifier!r} has no map yet: run "
                f"`atlas index {self.paths.identifier} --field TEXT_COLUMN`"
            )
        self.map = maps[0]
        self.table = self.map.data.tb
        self.n = self.table.num_rows
        self.id_field = self.table.column_names[0]
        projected = self.map.embeddings.tb
        if projected.num_rows != self.n:
            raise NotReadyError(
                f"the projection of {self.paths.identifier!r} has {projected.num_rows} rows for "
                f"{self.n} datums: rebuild with `atlas index {self.paths.identifier}`"
            )
        coords = projected_coords(projected)
        self.x, self.y = normalize_xy(coords[:, 0], coords[:, 1])
        self._lock = threading.Lock()
        self._categories: dict[str, Categories] = {}
        self._tag_store = open_tag_store(self.paths)

    # -- what the map has --------------------------------------------------------------------
    @property
    def indexed_field(self) -> str | None:
        return self.map.config.get("indexed_field")

    @cached_property
    def text_field(self) -> str | None:
        """The column shown in search results: the indexed field, else the first text column."""
        if self.indexed_field in self.table.column_names:
            return self.indexed_field
        return next(iter(self._string_columns), None)

    @cached_property
    def _string_columns(self) -> list[str]:
        return [
            f.name
            for f in self.table.schema
            if f.name != self.id_field and pa.types.is_string(f.type)
        ]

    @cached_property
    def semantic_embedding(self) -> NomicEmbedOptions | None:
        """How the latent vectors were embedded (model and mode), or None for uploaded vectors.

        Queries must be embedded the same way to land in the same space. The latent resource
        records what built it; the index configuration may be newer than the build.
        """
        if stored_embedding_dim(self.paths) is not None:
            return None
        built = (self.map.info("latent") or {}).get("params")
        recorded = built or self.map.index_config.embedding.model_dump()
        return NomicEmbedOptions(
            **{k: recorded[k] for k in ("model", "mode") if recorded.get(k) is not None}
        )

    @cached_property
    def topics(self) -> pd.DataFrame | None:
        """``[id, topic_depth_1, ...]`` if the topics resource is built and current."""
        frame = _optional(lambda: self.map.topics.df)
        return frame if frame is not None and len(frame) == self.n else None

    @cached_property
    def topic_depths(self) -> list[str]:
        if self.topics is None:
            return []
        return sorted(c for c in self.topics.columns if c.startswith(TOPIC_COLUMN_PREFIX))

    @cached_property
    def duplicates(self) -> pd.DataFrame | None:
        frame = _optional(lambda: self.map.duplicates.df)
        return frame if frame is not None and len(frame) == self.n else None

    @cached_property
    def categorical_fields(self) -> list[str]:
        """Columns with few distinct values (judged on a sample), offered for colouring."""
        found = []
        sample = self.table.slice(0, CATEGORICAL_SAMPLE)
        for field in self.table.schema:
            kind = field.type
            if field.name in (self.id_field, self.indexed_field):
                continue
            # Stored text is plain strings: lib.validate casts large and dictionary ones.
            if not (
                pa.types.is_string(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind)
            ):
                continue
            distinct = pc.count_distinct(sample.column(field.name), mode="all").as_py()
            if 1 < distinct <= CATEGORICAL_MAX_DISTINCT and distinct < max(sample.num_rows, 4):
                found.append(field.name)
        return found

    def colour_options(self) -> list[dict[str, str]]:
        """What points can be coloured by: topics, duplicate class, tag, categorical fields."""
        options = [{"key": "none", "label": "nothing"}]
        options += [
            {"key": c, "label": f"topic (depth {c.rsplit('_', 1)[1]})"} for c in self.topic_depths
        ]
        if self.duplicates is not None:
            options.append({"key": DUPLICATE_CLASS, "label": "duplicate class"})
        options.append({"key": "tag", "label": "tag"})
        options += [{"key": f"field:{f}", "label": f} for f in self.categorical_fields]
        return options

    def default_colour(self) -> str:
        """Topics at depth 1 where built, else the first categorical field, else nothing."""
        if self.topic_depths:
            return self.topic_depths[0]
        return f"field:{self.categorical_fields[0]}" if self.categorical_fields else "none"

    # -- topics ------------------------------------------------------------------------------
    @cached_property
    def topic_labels(self) -> list[dict[str, Any]]:
        """Every topic with its depth, count, parent and label anchor on the map.

        The anchor is the member point nearest the members' mean: for a curved cluster the
        mean itself can fall in empty space, a member never does.
        """
        if self.topics is None:
            return []
        descriptions = self._topic_descriptions()
        out: list[dict[str, Any]] = []
        for level, column in enumerate(self.topic_depths, start=1):
            cats = pd.Categorical(self.topics[column])
            codes = np.asarray(cats.codes, dtype=np.int64)
            member = codes >= 0
            if not member.any():
                continue
            k = len(cats.categories)
            counts = np.bincount(codes[member], minlength=k)
            mx = np.bincount(codes[member], weights=self.x[member], minlength=k) / np.maximum(
                counts, 1
            )
            my = np.bincount(codes[member], weights=self.y[member], minlength=k) / np.maximum(
                counts, 1
            )
            rows = np.flatnonzero(member)
            dist = (self.x[rows] - mx[codes[rows]]) ** 2 + (self.y[rows] - my[codes[rows]]) ** 2
            order = np.lexsort((dist, codes[rows]))
            first = np.unique(codes[rows][order], return_index=True)[1]
            anchor = np.full(k, -1, np.int64)
            anchor[codes[rows][order][first]] = rows[order][first]
            parents = (
                self.topics.groupby(column, observed=True)[self.topic_depths[level - 2]]
                .first()
                .to_dict()
                if level > 1
                else {}
            )
            for code, label in enumerate(cats.categories):
                if counts[code] == 0:
                    continue
                info = descriptions.get((level, str(label)), {})
                out.append(
                    {
                        "depth": level,
                        "label": str(label),
                        "topic_id": info.get("topic_id"),
                        "description": info.get("description"),
                        "count": int(counts[code]),
                        "parent": parents.get(label),
                        "x": float(self.x[anchor[code]]),
                        "y": float(self.y[anchor[code]]),
                    }
                )
        return out

    def _topic_descriptions(self) -> dict[tuple[int, str], dict[str, Any]]:
        meta = _optional(lambda: self.map.topics.metadata)
        if meta is None or "topic_short_description" not in getattr(meta, "columns", []):
            return {}
        found = {}
        for row in meta.to_dict("records"):
            try:
                key = (int(row["depth"]), str(row["topic_short_description"]))
            except (KeyError, TypeError, ValueError):
                continue
            topic_id = row.get("topic_id")
            found[key] = {
                "topic_id": None if topic_id is None else int(topic_id),
                "description": display_value(row.get("topic_description")),
            }
        return found

    # -- colourings and selections -------------------------------------------------------------
    def categories(self, by: str) -> Categories:
        """The colouring ``by`` (one of :meth:`colour_options`'s keys)."""
        if by == "tag":  # live: never cached
            return self._tag_categories()
        with self._lock:
            if by not in self._categories:
                self._categories[by] = self._compute_categories(by)
            return self._categories[by]

    def _compute_categories(self, by: str) -> Categories:
        if by == "none":
            return Categories(["all"], ["value"], [self.n], np.zeros(self.n, np.uint16))
        if by in self.topic_depths:
            return categorize(
                pa.array(self.topics[by], pa.string(), from_pandas=True), MAX_TOPIC_CATEGORIES
            )
        if by == DUPLICATE_CLASS and self.duplicates is not None:
            return categorize(
                pa.array(self.duplicates[DUPLICATE_CLASS], pa.string(), from_pandas=True)
            )
        if by.startswith("field:") and by[len("field:") :] in self.categorical_fields:
            return categorize(self.table.column(by[len("field:") :]))
        options = ", ".join(o["key"] for o in self.colour_options())
        raise ValueError(f"cannot colour by {by!r}; choose one of: {options}")

    def _tag_categories(self) -> Categories:
        """Each datum's first tag (in creation order), or "(untagged)"."""
        members = self._tag_store.memberships(self.ids)
        codes = np.full(self.n, len(members), np.uint16)
        for code, name in reversed(list(enumerate(members))):
            codes[members[name]] = code
        labels = [*members, UNTAGGED]
        kinds = ["value"] * len(members) + ["none"]
        return Categories(labels, kinds, np.bincount(codes, minlength=len(labels)).tolist(), codes)

    def select(self, by: str, value: str) -> np.ndarray:
        """Row positions whose category under ``by`` is ``value`` (a tag name for ``by=tag``)."""
        if by == "tag":
            ids = self.map.tags.get_datums_in_tag(value)
            return np.sort(self.positions(ids))
        cats = self.categories(by)
        if value not in cats.labels:
            raise LookupError(f"{by!r} has no category {value!r}")
        return np.flatnonzero(cats.codes == cats.labels.index(value))

    # -- datums ------------------------------------------------------------------------------
    @cached_property
    def ids(self) -> list[str]:
        return self.table.column(0).to_pylist()

    @cached_property
    def _id_index(self) -> pd.Index:
        return pd.Index(self.ids)

    def positions(self, ids: list[str]) -> np.ndarray:
        """Row positions of datum ids (ids not on the map are dropped)."""
        pos = self._id_index.get_indexer(pd.Index([str(i) for i in ids]))
        return pos[pos >= 0].astype(np.int64)

    def datum(self, index: int) -> dict[str, Any]:
        """One datum's fields, topics, duplicate class and tags, for the hover card."""
        if not 0 <= index < self.n:
            raise ValueError(f"index {index} is out of range: the map has {self.n} points")
        row = self.table.slice(index, 1).to_pylist()[0]
        datum_id = str(row[self.id_field])
        extra: dict[str, Any] = {}
        if self.topics is not None:
            for column in self.topic_depths:
                extra[column] = display_value(self.topics[column].iat[index])
        if self.duplicates is not None:
            extra[DUPLICATE_CLASS] = display_value(self.duplicates[DUPLICATE_CLASS].iat[index])
        members = self._tag_store.memberships([datum_id])
        return {
            "index": index,
            "id": datum_id,
            "id_field": self.id_field,
            "text_field": self.text_field,
            "fields": [{"name": k, "value": display_value(v)} for k, v in row.items()],
            "map": [{"name": k, "value": v} for k, v in extra.items()],
            "tags": [name for name, hit in members.items() if hit[0]],
        }

    def previews(self, positions: np.ndarray, query: str | None = None) -> list[dict[str, Any]]:
        """Id and a snippet of the text field (around ``query`` if found) for result lists."""
        out = []
        texts = (
            self.table.column(self.text_field).take(pa.array(positions, pa.int64())).to_pylist()
            if self.text_field and len(positions)
            else [None] * len(positions)
        )
        for pos, text in zip(positions.tolist(), texts, strict=True):
            out.append({"index": pos, "id": self.ids[pos], "snippet": _snippet(text, query)})
        return out

    # -- search ------------------------------------------------------------------------------
    def keyword_search(self, query: str) -> np.ndarray:
        """Rows whose text columns contain every word of ``query`` (case-insensitive, as
        substrings; ``"a phrase"`` in double quotes is one term), in map order."""
        terms = [t for t in shlex_terms(check_query(query)) if t]
        mask = np.ones(self.n, bool)
        for term in terms:
            found = np.zeros(self.n, bool)
            for name in self._string_columns:
                hits = pc.match_substring(self.table.column(name), term, ignore_case=True)
                found |= pc.fill_null(hits, False).to_numpy(zero_copy_only=False)
            mask &= found
        return np.flatnonzero(mask)

    def semantic_search(self, query: str, k: int = 50) -> tuple[np.ndarray, list[float]]:
        """The ``k`` datums nearest in meaning to ``query`` (through the map's own model)."""
        query = check_query(query)
        if not 1 <= k <= MAX_SEMANTIC_K:
            raise ValueError(f"k must be between 1 and {MAX_SEMANTIC_K}, got {k}")
        options = self.semantic_embedding
        if options is None:
            raise ValueError(
                "semantic search needs the model that embedded the map; this map was built "
                "from uploaded vectors: use keyword search"
            )
        from atlas_assets.lib.embed import embed_texts

        vector = embed_texts([query], model=options.model, mode=options.mode)
        ids, distances = self.map.embeddings.vector_search(queries=vector, k=min(k, self.n))
        return self.positions(ids[0]), distances[0]

    # -- writing and export ------------------------------------------------------------------
    def tag(self, indices: np.ndarray, tag: str, *, remove: bool = False) -> int:
        """Tag (or untag) the datums at ``indices`` in the live tag store; how many changed."""
        if not isinstance(tag, str):
            raise ValueError("tag must be a string")
        ids = [self.ids[i] for i in indices.tolist()]
        if remove:
            return self.map.tags.remove(ids, tag)
        return self.map.tags.add(ids, tag)

    def tags(self) -> list[dict[str, Any]]:
        """Tags with their colour and count, in creation order."""
        return [
            {
                "name": t["tag_name"],
                "color": safe_colour(t["metadata"].get("color")),
                "count": t["metadata"].get("count", 0),
            }
            for t in self.map.tags.get_tags()
        ]

    def export(self, indices: np.ndarray, fmt: str) -> tuple[bytes, str, str]:
        """The selected rows (with their topics) as ``(body, media type, file name)``.

        In CSV, text that a spreadsheet would run as a formula gets a leading ``'``; Parquet
        keeps every value as it is."""
        table = self.table.take(pa.array(indices, pa.int64()))
        if self.topics is not None:
            for column in self.topic_depths:
                values = self.topics[column].iloc[indices]
                table = table.append_column(column, pa.array(values, pa.string(), from_pandas=True))
        sink = io.BytesIO()
        name = f"{self.paths.slug}-selection"
        if fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(neutralise_formulas(table), sink)
            return sink.getvalue(), "text/csv; charset=utf-8", f"{name}.csv"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, sink)
            return sink.getvalue(), "application/vnd.apache.parquet", f"{name}.parquet"
        raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")

    # -- everything the page needs first ------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The dataset's description, colour options, topics and tags (JSON)."""
        return {
            "dataset": self.paths.partition_key,
            "identifier": self.paths.identifier,
            "description": self.dataset.description,
            "n": self.n,
            "id_field": self.id_field,
            "text_field": self.text_field,
            "fields": self.table.column_names,
            "colour_options": self.colour_options(),
            "default_colour": self.default_colour(),
            "topic_depths": len(self.topic_depths),
            "topics": self.topic_labels,
            "has_duplicates": self.duplicates is not None,
            "semantic_search": self.semantic_embedding is not None,
            "tags": self.tags(),
        }


def shlex_terms(query: str) -> list[str]:
    """Split a query into words, keeping ``"quoted phrases"`` whole (an unclosed quote is text)."""
    terms, rest = [], query
    while rest:
        rest = rest.lstrip()
        if rest.startswith('"') and '"' in rest[1:]:
            end = rest.index('"', 1)
            terms.append(rest[1:end])
            rest = rest[end + 1 :]
        else:
            word, _, rest = rest.partition(" ")
            terms.append(word)
    return [t.strip() for t in terms if t.strip()]


def _snippet(text: Any, query: str | None, width: int = 200) -> str:
    if not isinstance(text, str):
        return "" if text is None else str(text)[:width]
    first = shlex_terms(query)[0] if query and shlex_terms(query) else ""
    at = text.lower().find(first.lower()) if first else -1
    start = max(0, at - width // 3) if at > 0 else 0
    piece = text[start : start + width]
    return ("..." if start else "") + piece + ("..." if start + width < len(text) else "")
