"""Paths: the store root, dataset identifiers, partition keys and every resource file.

Layout under ``$ATLAS_HOME``::

    .dagster/                          default DAGSTER_HOME (runs, logs, lineage)
    inbox/<dataset>/                   files dropped here are ingested by the discovery sensor
    cache/embeddings/<model-key>/      append-only (text hash -> vector) shards
    models/<model-key>-static<v>.npz   static token table distilled from a model (fast path)
    datasets/[<org>/]<slug>/
        dataset.json                   identity, id field and index configuration
        shards/000001-<hash>.arrow     immutable batches from add_data, in upload order
        resources/manifest.json        the published map: which build file each resource is
        resources/builds/<run-id>/     one Dagster run's resource files (immutable once written)
        tags.sqlite                    the live tag store
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Every map resource, in lineage order; each is one Dagster asset and one Arrow file.
RESOURCES = (
    "dataset",
    "latent",
    "knn_graph",
    "projected",
    "topics",
    "metadata",
    "hierarchy",
    "duplicates",
    "tags",
)

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SLUG_PART = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# A shard's name: its sequence number, a revision once rewritten by delete_data, a content hash.
SHARD_NAME = re.compile(r"^(\d{6})(?:r(\d+))?-[0-9a-f]+\.arrow$")
# A partition key joins namespace and slug with a character that no slug contains.
_NAMESPACE_SEP = "."


def resource_key(name: str, part: str | None = None) -> str:
    """The key of a resource (or of one of its parts) in a build and in the manifest; its file
    is ``<key>.arrow``."""
    if name not in RESOURCES:
        raise ValueError(f"unknown resource {name!r}; expected one of {RESOURCES}")
    if part is not None and not part.isidentifier():
        raise ValueError(f"invalid resource part {part!r}")
    return name if part is None else f"{name}.{part}"


def _checkout_root() -> Path | None:
    """The source checkout this package runs from, if it is one (editable install)."""
    root = Path(__file__).resolve().parents[2]
    return (
        root if (root / "pyproject.toml").is_file() and (root / "atlas_assets").is_dir() else None
    )


def atlas_home() -> Path:
    """The store root: ``$ATLAS_HOME``, else ``data/store`` in the checkout, else ``~/.atlas``."""
    env = os.environ.get("ATLAS_HOME")
    if env:
        return Path(env).expanduser().resolve()
    checkout = _checkout_root()
    return (checkout / "data" / "store") if checkout else Path.home() / ".atlas"


def dagster_home() -> Path:
    """The persistent Dagster instance folder: ``$DAGSTER_HOME``, else ``$ATLAS_HOME/.dagster``."""
    env = os.environ.get("DAGSTER_HOME")
    return Path(env).expanduser().resolve() if env else atlas_home() / ".dagster"


def ensure_dagster_home() -> Path:
    """Create the Dagster instance folder with a ``dagster.yaml`` (telemetry off: nothing leaves
    this machine) unless one exists; returns the folder."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Written by atlas-assets: default SQLite storage in this folder.\n"
            "telemetry:\n  enabled: false\n"
        )
    return home


def _slugify(part: str) -> str:
    slug = re.sub(r"[\s_]", "-", part.strip().lower())
    return slug


def parse_identifier(identifier: str) -> tuple[str | None, str]:
    """``"Org/My Dataset"`` -> ``("org", "my-dataset")``; anything that could escape is refused.

    Lower-cases, turns spaces and ``_`` into ``-``; then every part must be ``[a-z0-9-]``.
    A partition key (``org.my-dataset``) is accepted too.
    """
    if not isinstance(identifier, str) or not identifier.strip():
        raise ValueError(f"dataset identifier must be a non-empty string, got {identifier!r}")
    text = identifier.strip()
    if "/" not in text and text.count(_NAMESPACE_SEP) == 1:
        text = text.replace(_NAMESPACE_SEP, "/")
    parts = text.split("/")
    if len(parts) > 2:
        raise ValueError(
            f"invalid dataset identifier {identifier!r}: use 'name' or 'org/name' "
            "(a '/' inside a part is not allowed)"
        )
    slugs = [_slugify(p) for p in parts]
    for slug in slugs:
        if not _SLUG_PART.match(slug):
            raise ValueError(
                f"invalid dataset identifier {identifier!r}: each part must be letters, digits, "
                "spaces, '-' or '_' and start with a letter or digit"
            )
    return (slugs[0], slugs[1]) if len(slugs) == 2 else (None, slugs[0])


@dataclass(frozen=True)
class DatasetPaths:
    """Every path of one dataset. Build with :func:`dataset_paths`."""

    root: Path
    namespace: str | None
    slug: str

    @property
    def identifier(self) -> str:
        return f"{self.namespace}/{self.slug}" if self.namespace else self.slug

    @property
    def partition_key(self) -> str:
        """The Dagster partition key: the slug, prefixed by ``<org>.`` in a namespace."""
        return f"{self.namespace}{_NAMESPACE_SEP}{self.slug}" if self.namespace else self.slug

    @property
    def meta(self) -> Path:
        return self.root / "dataset.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def resources(self) -> Path:
        return self.root / "resources"

    @property
    def tag_db(self) -> Path:
        return self.root / "tags.sqlite"

    @property
    def manifest(self) -> Path:
        """The small document, written last, that names the files of the published map."""
        return self.resources / "manifest.json"

    @property
    def publish_lock(self) -> Path:
        return self.resources / ".publish.lock"

    def build_dir(self, build: str) -> Path:
        """Where one build (a Dagster run, by its id) writes its resource files."""
        if not _BUILD_ID.match(build):
            raise ValueError(f"invalid build id {build!r}")
        return self.resources / "builds" / build

    def resource(self, name: str) -> Path:
        """The Arrow file of one map resource as this view sees it: the published map's (read
        from its manifest now), or for a run's view (:class:`~atlas_assets.store.publish.RunPaths`)
        the run's own file first. A path that does not exist if there is none."""
        return self._resolve(resource_key(name))

    def resource_part(self, name: str, part: str) -> Path:
        """A second table of a resource (e.g. the duplicate pairs), versioned with it."""
        return self._resolve(resource_key(name, part))

    def _resolve(self, key: str) -> Path:
        from atlas_assets.store.publish import published

        return published(self).path(key)

    def shard_files(self) -> list[Path]:
        """Source shards in upload order (their names start with a sequence number).

        Of a rewritten shard (``000003r1-<hash>.arrow``) only the latest revision counts, so a
        crash between writing a revision and removing the one it replaces never shows both.
        """
        latest: dict[int, tuple[int, Path]] = {}
        for f in self.shards.glob("[0-9]*.arrow") if self.shards.is_dir() else []:
            match = SHARD_NAME.match(f.name)
            if match:
                seq, rev = int(match[1]), int(match[2] or 0)
                if seq not in latest or latest[seq][0] < rev:
                    latest[seq] = (rev, f)
        return [latest[seq][1] for seq in sorted(latest)]


def dataset_paths(identifier: str, home: Path | None = None) -> DatasetPaths:
    """The paths of a dataset given its identifier or partition key."""
    namespace, slug = parse_identifier(identifier)
    base = (home or atlas_home()) / "datasets"
    root = base / namespace / slug if namespace else base / slug
    return DatasetPaths(root=root, namespace=namespace, slug=slug)


def embedding_cache_dir(model_key: str, home: Path | None = None) -> Path:
    """Where vectors of one model are cached by text hash."""
    return (home or atlas_home()) / "cache" / "embeddings" / model_key


def static_model_path(static_key: str, home: Path | None = None) -> Path:
    """The static token table distilled from a model, named by its key (which holds the method
    version), shared by every dataset of the store."""
    return (home or atlas_home()) / "models" / f"{static_key}.npz"


def inbox_dir(home: Path | None = None) -> Path:
    """Drop folder: files in ``inbox/<dataset>/`` are ingested by the discovery sensor."""
    return (home or atlas_home()) / "inbox"


def list_datasets(home: Path | None = None) -> list[DatasetPaths]:
    """Every dataset in the store, sorted by identifier."""
    base = (home or atlas_home()) / "datasets"
    found = []
    for meta in sorted(base.glob("*/dataset.json")) + sorted(base.glob("*/*/dataset.json")):
        rel = meta.parent.relative_to(base).parts
        found.append(dataset_paths("/".join(rel), home))
    return sorted(found, key=lambda p: p.identifier)
