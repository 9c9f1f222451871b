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
    locks/datasets/...                 on a remote store: the lease of each writer's lock above

``$ATLAS_HOME`` may be a URL (``s3://bucket/prefix``, ...): the same layout then lives on the
object store and is worked through a local mirror, so these are still local paths (see
``store/remote.py``).
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from atlas_assets.store.remote import (
    fetch,
    glob,
    is_url,
    listing,
    remote_of,
    resolve_root,
    storage_options,
)

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
# Where ``atlas serve`` listens unless told otherwise (or unless the port is taken); not 8787,
# the Dask dashboard's default, which users of the Dask resource often have running.
EXPLORER_HOST = "127.0.0.1"
EXPLORER_PORT = 8700


def resource_key(name: str, part: str | None = None) -> str:
    """The key of a resource (or of one of its parts) in a build and in the manifest; its file
    is ``<key>.arrow``."""
    if name not in RESOURCES:
        raise ValueError(f"unknown resource {name!r}; expected one of {RESOURCES}")
    if part is not None and not part.isidentifier():
        raise ValueError(f"invalid resource part {part!r}")
    return name if part is None else f"{name}.{part}"


_REMOTE_SETTINGS = ("ATLAS_STORAGE_OPTIONS", "ATLAS_CACHE_DIR", "XDG_CACHE_HOME")
_MIRROR_OF: dict[tuple[str, ...], Path] = {}


def _checkout_root() -> Path | None:
    """The source checkout this package runs from, if it is one (editable install)."""
    root = Path(__file__).resolve().parents[2]
    return (
        root if (root / "pyproject.toml").is_file() and (root / "atlas_assets").is_dir() else None
    )


def atlas_home() -> Path:
    """The store root: ``$ATLAS_HOME``, else ``data/store`` in the checkout, else ``~/.atlas``.

    ``$ATLAS_HOME`` may be a URL (``s3://bucket/prefix``, ``file:///path``, ...; options in
    ``$ATLAS_STORAGE_OPTIONS``): then this is the local mirror the store is worked through.
    """
    env = os.environ.get("ATLAS_HOME")
    if env and is_url(env):
        # A URL (s3://bucket/prefix, ...) is worked through a local mirror (store/remote.py),
        # resolved once per process and settings (this is called on every path built).
        settings = (env, *(os.environ.get(k, "") for k in _REMOTE_SETTINGS))
        if settings not in _MIRROR_OF:
            _MIRROR_OF[settings] = resolve_root(env, storage_options(), setting="ATLAS_HOME")
        return _MIRROR_OF[settings]
    if env:
        return resolve_root(env, setting="ATLAS_HOME")
    checkout = _checkout_root()
    return (checkout / "data" / "store") if checkout else Path.home() / ".atlas"


def dagster_home() -> Path:
    """The persistent Dagster instance folder: ``$DAGSTER_HOME``, else ``$ATLAS_HOME/.dagster``."""
    env = os.environ.get("DAGSTER_HOME")
    return Path(env).expanduser().resolve() if env else atlas_home() / ".dagster"


# The Dagster instance's PostgreSQL database (run, event-log and schedule storage); unset, the
# instance is SQLite in DAGSTER_HOME.
DAGSTER_PG_URL = "ATLAS_DAGSTER_PG_URL"
_WRITTEN_BY = "# Written by atlas-assets"
_SQLITE_YAML = (
    f"{_WRITTEN_BY}: default SQLite storage in this folder.\ntelemetry:\n  enabled: false\n"
)
# The URL stays in the environment (Dagster reads it there at every start), never in the file.
_POSTGRES_YAML = (
    f"{_WRITTEN_BY}: run, event-log and schedule storage in the PostgreSQL database\n"
    f"# of ${DAGSTER_PG_URL} (rewritten when that variable is set or unset; delete these\n"
    "# comment lines to keep your own edits).\n"
    "storage:\n"
    "  postgres:\n"
    "    postgres_url:\n"
    f"      env: {DAGSTER_PG_URL}\n"
    "telemetry:\n  enabled: false\n"
)


def check_dagster_pg_url() -> str | None:
    """``$ATLAS_DAGSTER_PG_URL`` checked (its form, then a connection), writing nothing; ``None``
    when unset (SQLite). A ``ValueError`` or ``DatabaseUnavailable`` names the setting."""
    url = os.environ.get(DAGSTER_PG_URL, "").strip()
    if url:
        from atlas_assets.lib.pg import check_reachable, check_url

        check_reachable(check_url(url, DAGSTER_PG_URL, driver="psycopg2"), DAGSTER_PG_URL)
    return url or None


def ensure_dagster_home() -> Path:
    """Create the Dagster instance folder with a ``dagster.yaml`` (telemetry off: nothing leaves
    this machine); returns the folder.

    With ``$ATLAS_DAGSTER_PG_URL`` set (``postgresql+psycopg2://user:password@host/db``: the
    driver dagster-postgres needs), the instance stores runs, event logs and schedules in that
    PostgreSQL database (``dagster-postgres``), checked here first: a malformed URL is a
    ``ValueError`` and an unreachable database or wrong credentials a ``DatabaseUnavailable``,
    both naming the setting, before anything is written. A ``dagster.yaml`` this function wrote
    follows the variable (set after a first local run, the instance switches to PostgreSQL and
    says so); one the user wrote is left alone, unless the variable is set and the file does not
    configure PostgreSQL storage, which is refused rather than silently ignored.
    """
    url = check_dagster_pg_url()
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = _POSTGRES_YAML if url else _SQLITE_YAML
    current = config.read_text() if config.exists() else None
    if current == wanted:
        return home
    if current is not None and not current.startswith(_WRITTEN_BY):
        if url and "postgres" not in current:
            raise ValueError(
                f"{DAGSTER_PG_URL} is set but {config} (not written by atlas-assets) does not "
                f"configure PostgreSQL storage: add 'storage: {{postgres: {{postgres_url: "
                f"{{env: {DAGSTER_PG_URL}}}}}}}' to it, or remove it to have it written"
            )
        return home
    if current is not None:
        import warnings

        where = "PostgreSQL ($ATLAS_DAGSTER_PG_URL)" if url else "SQLite in this folder"
        warnings.warn(
            f"the Dagster instance in {home} now stores its runs in {where}; the runs recorded "
            "before stay where they were, and each dataset's partition comes back at its next "
            "build (atlas index)",
            UserWarning,
            stacklevel=2,
        )
    tmp = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
    tmp.write_text(wanted)
    os.replace(tmp, config)  # a reader sees the old file or the new one, never half of one
    return home


def slugify(name: str) -> str:
    """A display name as the hosted client slugs it (``"Café News (AG)"`` -> ``cafe-news-ag``).

    Accents are stripped (NFD), letters lower-cased, spaces and ``_`` become ``-``, every other
    character is dropped (so ``news.v2`` -> ``newsv2``) and runs of ``-`` collapse.
    """
    text = unicodedata.normalize("NFD", name.strip()).lower().replace(" ", "-").replace("_", "-")
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "", text))


def _refuse(identifier: object, why: str) -> ValueError:
    return ValueError(f"invalid dataset identifier {identifier!r}: {why}")


def parse_identifier(identifier: str) -> tuple[str | None, str]:
    """``"Org/My Dataset"`` -> ``("org", "my-dataset")``, normalised as the hosted client does.

    Each part goes through :func:`slugify`; a ``/`` separates the organisation (namespace) from
    the name. Only what could escape the store or names nothing is refused: more than one ``/``,
    a ``\\``, ``.``/``..`` parts, a part that is empty after normalising.
    """
    if not isinstance(identifier, str) or not identifier.strip():
        raise ValueError(f"dataset identifier must be a non-empty string, got {identifier!r}")
    parts = identifier.strip().split("/")
    if len(parts) > 2 or "\\" in identifier:
        raise _refuse(identifier, "use 'name' or 'org/name' (no other '/' or '\\')")
    if any(p.strip() in (".", "..") for p in parts):
        raise _refuse(identifier, "'.' and '..' are not names")
    slugs = [slugify(p) for p in parts]
    for part, slug in zip(parts, slugs, strict=True):
        if not slug.strip("-"):
            raise _refuse(identifier, f"{part!r} has no letter or digit to name a dataset by")
    slugs = [s.strip("-") for s in slugs]
    return (slugs[0], slugs[1]) if len(slugs) == 2 else (None, slugs[0])


def parse_partition_key(key: str) -> tuple[str | None, str]:
    """A Dagster partition key (``slug`` or ``org.slug``, from :attr:`DatasetPaths.partition_key`)
    -> ``(namespace, slug)``; anything not of that exact form is refused."""
    parts = key.split(_NAMESPACE_SEP) if isinstance(key, str) else []
    if not 1 <= len(parts) <= 2 or not all(_SLUG_PART.match(p) for p in parts):
        raise ValueError(f"invalid dataset partition key {key!r}: expected 'name' or 'org.name'")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


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
        """Held briefly by every writer of the dataset's files (shards, ``dataset.json``)."""
        return self.root / ".lock"

    @property
    def build_lock(self) -> Path:
        """Held by ``create_index`` from recording the configuration to the end of the build,
        so concurrent builds of one dataset run one after the other."""
        return self.root / ".build.lock"

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
        for f in self.all_shard_files():
            match = SHARD_NAME.match(f.name)
            if match:
                seq, rev = int(match[1]), int(match[2] or 0)
                if seq not in latest or latest[seq][0] < rev:
                    latest[seq] = (rev, f)
        files = [latest[seq][1] for seq in sorted(latest)]
        for f in files:
            fetch(f)  # a remote store's shard, downloaded once (a no-op when local)
        return files

    def all_shard_files(self) -> list[Path]:
        """Every shard file, superseded revisions included (on a remote store: its listing)."""
        names = listing(self.shards)
        if names is not None:
            return [self.shards / n for n in names if n[:1].isdigit() and n.endswith(".arrow")]
        return sorted(self.shards.glob("[0-9]*.arrow")) if self.shards.is_dir() else []


def lease_path(lock: Path) -> Path | None:
    """Where a writer's lock file is held across machines on a remote store: the object
    ``locks/<the lock's path>`` (see ``store/lease.py``), outside the dataset's folder so that
    removing a dataset under its lock leaves the lease to its holder. None for a local store."""
    found = remote_of(lock)
    if found is None:
        return None
    mirror = found[0].mirror
    return mirror / "locks" / lock.relative_to(mirror)


def _paths(namespace: str | None, slug: str, home: Path | None) -> DatasetPaths:
    base = (home or atlas_home()) / "datasets"
    root = base / namespace / slug if namespace else base / slug
    return DatasetPaths(root=root, namespace=namespace, slug=slug)


def dataset_paths(identifier: str, home: Path | None = None) -> DatasetPaths:
    """The paths of a dataset given its identifier (a display name or ``org/name``)."""
    return _paths(*parse_identifier(identifier), home)


def partition_paths(key: str, home: Path | None = None) -> DatasetPaths:
    """The paths of a dataset given its Dagster partition key (``name`` or ``org.name``)."""
    return _paths(*parse_partition_key(key), home)


def explorer_url(partition_key: str, host: str = EXPLORER_HOST, port: int = EXPLORER_PORT) -> str:
    """The map explorer's page for a dataset, as ``atlas serve`` serves it by default."""
    return f"http://{host}:{port}/?dataset={partition_key}"


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
    remote = glob(base, "*/dataset.json")
    metas = remote + glob(base, "*/*/dataset.json") if remote is not None else None
    if metas is None:
        metas = sorted(base.glob("*/dataset.json")) + sorted(base.glob("*/*/dataset.json"))
    for meta in metas:
        rel = meta.parent.relative_to(base).parts
        found.append(dataset_paths("/".join(rel), home))
    return sorted(found, key=lambda p: p.identifier)
