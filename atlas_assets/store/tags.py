"""Which tag store a dataset uses: its SQLite file (the default) or a shared PostgreSQL database.

``ATLAS_TAGS_URL=postgresql://user:password@host:port/database`` puts every dataset's live tags
in that database (needed when the store is shared: SQLite on an object store or a network file
system is unsafe); unset or empty, each dataset keeps ``tags.sqlite`` beside its data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Collection

from atlas_assets.lib.tagstore import BaseTagStore, TagStore
from atlas_assets.store.layout import DatasetPaths
from atlas_assets.store.remote import remote_of

TAGS_URL = "ATLAS_TAGS_URL"
_warned: set[str] = set()  # remote stores already warned about, once per process each


def tags_url() -> str | None:
    """``$ATLAS_TAGS_URL`` checked (a malformed URL is a ``ValueError`` naming it), or ``None``
    for the SQLite default."""
    from atlas_assets.lib.pg import check_url

    url = os.environ.get(TAGS_URL, "").strip()
    return check_url(url, TAGS_URL) if url else None


def tag_store(
    paths: DatasetPaths, valid_ids: Callable[[], Collection[str]] | None = None
) -> BaseTagStore:
    """The dataset's live tag store (see the module docstring for which one)."""
    url = tags_url()
    if url:
        from atlas_assets.lib.tagstore_pg import PostgresTagStore

        return PostgresTagStore(url, paths.partition_key, valid_ids=valid_ids)
    remote = remote_of(paths.root)
    if remote is not None and remote[0].url not in _warned:
        _warned.add(remote[0].url)
        warnings.warn(
            f"the store is shared ({remote[0].url}) but {TAGS_URL} is not set: live tags are "
            f"kept in this machine's {paths.tag_db.name} and other machines do not see them; "
            f"set {TAGS_URL}=postgresql://... to share them",
            UserWarning,
            stacklevel=2,
        )
    return TagStore(paths.tag_db, valid_ids=valid_ids)


def check_tags_setting() -> None:
    """Before a build writes anything: a set ``ATLAS_TAGS_URL`` must parse and its database
    answer (else one error naming the setting)."""
    url = tags_url()
    if url:
        from atlas_assets.lib.pg import check_reachable

        check_reachable(url, TAGS_URL)
