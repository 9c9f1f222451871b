"""``AtlasMapTags``: the live, writable tag store of a map's dataset."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from atlas_assets.lib.tagstore import BaseTagStore, TagStore

if TYPE_CHECKING:
    from atlas_assets.reader.map import AtlasMap


def open_tag_store(paths) -> BaseTagStore:
    """The dataset's live tag store (its SQLite file, or the PostgreSQL database of
    ``ATLAS_TAGS_URL``), validating ids against every id uploaded so far."""
    from atlas_assets.store.datasets import load_meta, read_shards
    from atlas_assets.store.tags import tag_store

    def valid_ids():
        id_field = (load_meta(paths) or {}).get("id_field")
        table = read_shards(paths, [id_field]) if id_field else None
        return [] if table is None else table.column(id_field)

    store = tag_store(paths, valid_ids=valid_ids)
    if isinstance(store, TagStore):
        paths.root.mkdir(parents=True, exist_ok=True)  # the SQLite file's folder
    return store


class AtlasMapTags:
    """Tags on the map's datums, keyed by datum id: they survive re-indexing and refreshes.

    Unlike the hosted client, tags are writable here (:meth:`add`, :meth:`remove`). The store is
    shared with other processes (notebooks, the map explorer) and every change is transactional.
    """

    def __init__(self, atlas_map: AtlasMap) -> None:
        self._map = atlas_map
        self._store = open_tag_store(atlas_map._paths)

    def get_tags(self) -> list[dict[str, Any]]:
        """Every tag as ``{"tag_name", "tag_id", "tag_definition_id", "metadata"}``, in creation
        order.

        A tag here has exactly one definition (the set of ids in it), so ``tag_definition_id``
        equals ``tag_id``. A map built with duplicate detection also lists the derived tag
        ``"duplicates: deletion candidates"`` (see ``NomicDuplicatesOptions.tag_duplicates``).
        """
        return [{**tag, "tag_definition_id": tag["tag_id"]} for tag in self._store.get_tags()]

    def get_datums_in_tag(self, tag_name: str, overwrite: bool = False) -> list[str]:
        """The ids of the datums tagged ``tag_name`` (unknown tag: ``ValueError``).

        ``overwrite`` is kept for compatibility: the hosted client re-downloads a cached tag when
        it is True; the local store is always read live, so both values return current data.
        """
        return self._store.get_datums_in_tag(tag_name)

    @property
    def df(self) -> pd.DataFrame:
        """``[id, <one bool column per tag>]`` in the map's row order, read live."""
        ids = self._map.data.tb.column(0)
        members = self._store.memberships(ids.to_pylist())
        return pd.DataFrame({self._map.data.tb.column_names[0]: ids.to_pylist(), **members})

    def add(self, ids: Iterable[str], tags: str | Iterable[str]) -> int:
        """Tag datums (creating tags as needed); returns how many new memberships were made."""
        return self._store.add(ids, tags)

    def remove(
        self, ids: Iterable[str] | None, tags: str | Iterable[str], delete_all: bool = False
    ) -> int:
        """Untag datums, or with ``delete_all=True`` delete the tags themselves."""
        return self._store.remove(ids, tags, delete_all=delete_all)

    def __repr__(self) -> str:
        counts = self._store.counts()
        return f"AtlasMapTags({len(counts)} tags: {counts})"
