"""A store root that may be a URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://``).

A remote store is worked through a local mirror, ``$ATLAS_CACHE_DIR/stores/<hash of the URL>/``,
so every caller keeps getting local paths (Arrow files are memory-mapped from there):

* immutable files (shards, build resources, embedding-cache shards) are uploaded once written
  (:func:`upload`) and fetched once when missing locally (:func:`fetch`): their names never
  change content, so the mirror is also the read cache, keyed by version;
* the small mutable documents (``dataset.json``, ``resources/manifest.json``) are read from the
  object store (:func:`refresh`; at most every ``ATLAS_REFRESH_SECONDS`` outside writers'
  locks) and written with one PUT, atomic on S3; the manifest's PUT is conditional on the ETag
  its writer read (:func:`version_tag`), so two machines' commits never overwrite each other;
* folders whose members come and go (shards, the embedding cache, the datasets) are listed on
  the object store (:func:`listing`), which is the truth; the mirror may hold more;
* the inbox's waiting files are downloaded into the mirror's inbox once settled
  (:func:`pull_inbox`) and moved on the object store as their local copies were
  (:func:`move_inbox_object`);
* locks are flocks in the mirror, and writers' locks also a lease on the object store
  (``store/lease.py``); temporary files, the tag store and the Dagster instance stay local.

For a local root (a path or ``file://``) every function here is a no-op, so the store works
exactly as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HOME_ENV = "ATLAS_HOME"
OPTIONS_ENV = "ATLAS_STORAGE_OPTIONS"
CACHE_ENV = "ATLAS_CACHE_DIR"
REFRESH_ENV = "ATLAS_REFRESH_SECONDS"
# A mutable document (manifest, dataset.json) this process read from the object store less than
# this long ago is not asked for again, outside a writer's lock: opening a map again within it
# costs no request. Readers on other machines see a new map at most this much later.
REFRESH_SECONDS = 1.0
# The scheme -> the fsspec implementation and the package that provides it.
SCHEMES = {
    "s3": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "memory": None,
}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class StoreConfigError(ValueError):
    """The store root or its storage options are unusable; the message names the setting."""


class ConflictError(RuntimeError):
    """A conditional write lost: the object changed since it was read (another machine wrote
    it meanwhile); read it again and redo the change."""


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme:...``) rather than a local path."""
    return bool(_URL.match(text)) and not re.match(r"^[A-Za-z]:[\\/]", text)


def cache_dir() -> Path:
    """The local cache folder: ``$ATLAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/atlas-assets``,
    else ``~/.cache/atlas-assets``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "atlas-assets"


def storage_options(raw: str | None = None, setting: str = OPTIONS_ENV) -> dict[str, Any]:
    """The storage options (a JSON object) from ``raw``, else ``$ATLAS_STORAGE_OPTIONS``."""
    raw = os.environ.get(OPTIONS_ENV, "") if raw is None else raw
    if not raw.strip():
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StoreConfigError(f"{setting} is not valid JSON ({err.msg} at {err.pos})") from None
    if not isinstance(options, dict):
        raise StoreConfigError(f"{setting} must be a JSON object, got {type(options).__name__}")
    return options


@dataclass(frozen=True, eq=False)
class RemoteStore:
    """One remote store root and the local mirror it is worked through."""

    url: str  # scheme://bucket/prefix, without a trailing '/'
    fs: Any  # an fsspec filesystem
    root: str  # the root as the filesystem names it (``bucket/prefix``)
    mirror: Path  # the local working copy and read cache

    def key(self, local: Path) -> str:
        rel = local.relative_to(self.mirror).as_posix()
        return self.root if rel == "." else f"{self.root}/{rel}"


# s3fs moves a big object in parts held in memory, by default 10 of 50 MiB at a time: memory
# stays bounded with 4 parts of 8 MiB.
_TRANSFER = {"s3": {"chunksize": 8 << 20, "max_concurrency": 4}}
_MIRRORS: dict[Path, RemoteStore] = {}
_READ_AT: dict[Path, float] = {}  # mutable documents: when this process last read them
_LOCAL = threading.local()  # depth of writers' locks held by this thread: read fresh inside
_OPENED: dict[tuple[str, str, Path], RemoteStore] = {}


def _fail(setting: str, value: str, why: str) -> StoreConfigError:
    return StoreConfigError(f"{setting}={value!r}: {why}")


def parse_url(url: str, setting: str = HOME_ENV) -> tuple[str, str]:
    """``(scheme, root)`` of a store URL, or a :class:`StoreConfigError` naming ``setting``."""
    match = _URL.match(url)
    scheme = match[1].lower() if match else ""
    if not url.startswith(f"{match[1] if match else ''}://"):
        raise _fail(setting, url, "a store URL has the form scheme://bucket/prefix")
    if scheme not in SCHEMES:
        raise _fail(
            setting,
            url,
            f"unsupported scheme {scheme!r}; use a path or one of "
            f"file://, {', '.join(f'{s}://' for s in SCHEMES)}",
        )
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _fail(setting, url, "a store URL takes no '?' or '#' part")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if scheme != "memory":
        if not bucket:
            raise _fail(setting, url, "the URL names no bucket")
        if not _BUCKET.match(bucket):
            raise _fail(setting, url, f"{bucket!r} is not a valid bucket name")
    if any(p in (".", "..") for p in prefix.split("/")) or "//" in parts.path.strip("/"):
        raise _fail(setting, url, "the prefix has an empty, '.' or '..' part")
    root = "/".join(p for p in (bucket, prefix) if p)
    return scheme, ("/" + root if scheme == "memory" else root)


def _probe(store: RemoteStore, setting: str, options_setting: str) -> None:
    """Check that the bucket exists and the credentials may list it, before anything is written."""
    fs, bucket = store.fs, store.root.lstrip("/").split("/")[0]
    if store.url.startswith("memory:"):
        return
    try:
        fs.ls(store.root, detail=False, refresh=True)
        return
    except FileNotFoundError:
        pass  # an empty prefix: the bucket itself must exist
    except Exception as err:  # noqa: BLE001 - any library error becomes one clear message
        raise _access_error(store.url, setting, options_setting, err) from None
    try:
        exists = fs.exists(bucket)
        if exists:
            fs.ls(bucket, detail=False, refresh=True)
    except Exception as err:  # noqa: BLE001
        raise _access_error(store.url, setting, options_setting, err) from None
    if not exists:
        raise _fail(
            setting,
            store.url,
            f"bucket {bucket!r} does not exist (or is not visible "
            f"with these credentials; see {options_setting})",
        )


def _access_error(url: str, setting: str, options_setting: str, err: Exception) -> StoreConfigError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, PermissionError) or "denied" in text.lower() or "credential" in text.lower():
        why = f"access denied ({text}): check the credentials ({options_setting}, AWS_*, ...)"
    else:
        why = f"cannot reach the store ({type(err).__name__}: {text}); check {options_setting}"
    return _fail(setting, url, why)


def open_store(
    url: str,
    options: dict[str, Any] | None = None,
    *,
    setting: str = HOME_ENV,
    options_setting: str = OPTIONS_ENV,
    cache: Path | None = None,
) -> RemoteStore:
    """The remote store at ``url`` (checked once per process by a cheap listing), registered so
    that paths under its mirror (in ``cache``, default :func:`cache_dir`) are synchronised
    with it."""
    scheme, root = parse_url(url, setting)
    url = f"{scheme}://{root.lstrip('/')}"  # one spelling per store: one mirror
    options = dict(options or {})
    key = (url, json.dumps(options, sort_keys=True, default=str), (cache or cache_dir()).resolve())
    if key in _OPENED:
        return _OPENED[key]
    package = SCHEMES[scheme]
    if package is not None:
        try:
            __import__(package)
        except ImportError:
            raise _fail(
                setting,
                url,
                f"needs the {package} package: pip install "
                f"'atlas-assets[{'s3' if package == 's3fs' else scheme}]' or {package}",
            ) from None
    import fsspec

    fs_options = dict(options)
    if scheme != "memory":
        # Listings are read fresh: other processes and machines add and remove objects.
        fs_options.setdefault("use_listings_cache", False)
    try:
        fs = fsspec.filesystem(scheme, **fs_options)
    except TypeError as err:
        raise StoreConfigError(f"{options_setting}: {err}") from None
    # The mirror is named by the store, not the credentials: rotating a key keeps the cache.
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get(
        "endpoint_url", ""
    )
    digest = hashlib.sha256(f"{url}\0{endpoint}".encode()).hexdigest()[:16]
    mirror = key[2] / "stores" / digest
    store = RemoteStore(url, fs, root, mirror)
    _probe(store, setting, options_setting)
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / ".store-url").write_text(url + "\n")
    _OPENED[key] = store
    _MIRRORS[mirror] = store
    return store


def resolve_root(
    root: str, options: dict[str, Any] | None = None, *, setting: str, cache: Path | None = None
) -> Path:
    """A store root as a local path: itself, a ``file://`` URL's path, or a remote store's
    mirror. A string that looks like a URL but is not a valid one is refused."""
    if root.lower().startswith("file:"):
        parts = urlsplit(root)
        if not root.lower().startswith("file://") or parts.netloc not in ("", "localhost"):
            raise _fail(setting, root, "a file URL has the form file:///absolute/path")
        return Path(parts.path).resolve()
    if is_url(root):
        return open_store(root, options, setting=setting, cache=cache).mirror
    return Path(root).expanduser().resolve()


def remote_of(path: Path) -> tuple[RemoteStore, str] | None:
    """The remote store a local path mirrors, and its key there; None for a local store."""
    if not _MIRRORS:
        return None
    for mirror, store in _MIRRORS.items():
        if path == mirror or mirror in path.parents:
            return store, store.key(path)
    return None


def store_error(store: RemoteStore, err: Exception, what: str) -> Exception:
    """``err`` from the store's library as one line naming ``ATLAS_HOME`` (missing files stay
    ``FileNotFoundError``)."""
    if isinstance(err, FileNotFoundError):
        return err
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return StoreConfigError(f"{what} on {HOME_ENV}={store.url!r} failed: {text}")


def version_tag(path: Path) -> str | None:
    """The ETag of the object behind a mutable document, ``""`` if there is none yet; None when
    the store cannot write conditionally (a local store, ``memory://``, ...)."""
    found = remote_of(path)
    if found is None or not found[0].url.startswith("s3://"):
        return None
    store, key = found
    try:
        return str(store.fs.info(key)["ETag"])
    except FileNotFoundError:
        return ""
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"reading {key}") from None


def precondition_failed(err: Exception) -> bool:
    """Whether ``err`` is a conditional write refused (the object changed or exists)."""
    cause = getattr(err.__cause__, "response", None) or {}
    return isinstance(err, FileExistsError) or cause.get("Error", {}).get("Code") in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
    )


def upload(path: Path, *, target: Path | None = None, expect: str | None = None) -> None:
    """Copy a local file to the object of ``target`` (default: ``path`` itself) in the mirror's
    store: one PUT, or a multipart upload that appears whole.

    ``expect`` (from :func:`version_tag`) makes it a compare-and-swap: the PUT happens only if
    the object still has that ETag (``""``: only if it does not exist), else
    :class:`ConflictError`. Inside a writer's lock, a document read there is written back
    that way by default: another machine's change in between is an error, not lost.
    """
    target = target or path
    found = remote_of(target)
    if found is None:
        return
    store, key = found
    tags = getattr(_LOCAL, "tags", {}) if getattr(_LOCAL, "depth", 0) else {}
    if expect is None:
        expect = tags.get(target)
    try:
        if expect is None:
            store.fs.put_file(str(path), key, **_TRANSFER.get(store.url.split(":", 1)[0], {}))
        else:
            bucket, _, name = key.partition("/")
            condition = {"IfMatch": expect} if expect else {"IfNoneMatch": "*"}
            answer = store.fs.call_s3(
                "put_object", Bucket=bucket, Key=name, Body=path.read_bytes(), **condition
            )
            if target in tags:
                tags[target] = answer["ETag"]  # a second write in the section replaces this one
    except Exception as err:  # noqa: BLE001
        if expect is not None and precondition_failed(err):
            raise ConflictError(
                f"{store.url}/{key[len(store.root) + 1 :]} was changed by another writer since "
                "it was read; nothing was written: try again"
            ) from None
        raise store_error(store, err, f"writing {key}") from None
    _READ_AT[target] = time.monotonic()  # what this process wrote is what is stored


def fetch(path: Path) -> bool:
    """Make an immutable file of the mirror local, downloading it once; False if it exists
    neither here nor there (or the store is local and it is missing)."""
    if path.is_file():
        return True
    found = remote_of(path)
    if found is None:
        return False
    store, key = found
    from atlas_assets.store.files import atomic_path

    try:
        with atomic_path(path) as tmp:
            store.fs.get_file(key, str(tmp), **_TRANSFER.get(store.url.split(":", 1)[0], {}))
    except FileNotFoundError:
        return False
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"reading {key}") from None
    return True


def refresh_seconds() -> float:
    return float(os.environ.get(REFRESH_ENV, REFRESH_SECONDS))


@contextlib.contextmanager
def fresh() -> Iterator[None]:
    """Within the body, every mutable document is read from the object store (writers' locks
    hold this: a writer decides on what is stored now)."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    if _LOCAL.depth == 1:
        _LOCAL.tags = {}  # documents read in this section -> the ETag they were read at
    try:
        yield
    finally:
        _LOCAL.depth -= 1
        if not _LOCAL.depth:
            _LOCAL.tags = {}


def refresh(path: Path) -> None:
    """Bring a small mutable document of the mirror up to date with its object (removing the
    local copy if the object is gone), unless this process read it less than
    :func:`refresh_seconds` ago outside a writer's lock; the file changes only if its object did."""
    found = remote_of(path)
    if found is None:
        return
    now = time.monotonic()
    if not getattr(_LOCAL, "depth", 0) and now - _READ_AT.get(path, -1e18) < refresh_seconds():
        return
    store, key = found
    if getattr(_LOCAL, "depth", 0):
        # A writer: what it writes back after this read must replace exactly what it read.
        tag = version_tag(path)
        if tag is not None:
            _LOCAL.tags[path] = tag
    try:
        data = store.fs.cat_file(key)
    except FileNotFoundError:
        path.unlink(missing_ok=True)
        _READ_AT[path] = now
        return
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"reading {key}") from None
    _READ_AT[path] = now
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return
    from atlas_assets.store.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def listing(folder: Path) -> list[str] | None:
    """Names of the objects directly in ``folder`` on the remote store (None for a local one)."""
    found = remote_of(folder)
    if found is None:
        return None
    store, key = found
    try:
        entries = store.fs.ls(key, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"listing {key}") from None
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file")


def glob(base: Path, pattern: str) -> list[Path] | None:
    """Local paths (in the mirror) of the remote objects under ``base`` matching ``pattern``;
    None for a local store."""
    found = remote_of(base)
    if found is None:
        return None
    store, key = found
    try:
        names = store.fs.glob(f"{key}/{pattern}", refresh=True)
    except FileNotFoundError:
        return []
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"listing {key}") from None
    return [base / name[len(key) + 1 :] for name in names]


def remove(path: Path) -> None:
    """Remove a file of the store (its object too, for a remote store)."""
    found = remote_of(path)
    if found is not None:
        store, key = found
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm_file(key)
    path.unlink(missing_ok=True)


def remove_tree(folder: Path) -> None:
    """Remove a folder of the store and everything in it (its objects too, when remote)."""
    found = remote_of(folder)
    if found is not None:
        store, key = found
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm(key, recursive=True)
    shutil.rmtree(folder, ignore_errors=True)


def claim(path: Path) -> bool:
    """Create the empty object ``path`` only if it does not exist (S3's ``If-None-Match: *``):
    True if this call created it. Always True where the store cannot tell (a local store, whose
    writers take its locks, or ``memory://``)."""
    found = remote_of(path)
    if found is None or not found[0].url.startswith("s3://"):
        return True
    store, key = found
    bucket, _, name = key.partition("/")
    try:
        store.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=b"", IfNoneMatch="*")
    except Exception as err:  # noqa: BLE001
        if precondition_failed(err):
            return False
        raise store_error(store, err, f"writing {key}") from None
    return True


def upload_missing(folder: Path) -> None:
    """Upload the files of a local folder that its remote copy lacks (a build whose writer died
    between writing a file and uploading it, re-executed since)."""
    names = listing(folder)
    if names is None or not folder.is_dir():
        return
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in names:
            upload(f)


def _modified(store: RemoteStore, entry: dict[str, Any]) -> float:
    """An object's last modification as a POSIX timestamp (S3's LastModified)."""
    when = entry.get("LastModified") or entry.get("mtime") or entry.get("created")
    if when is None:
        when = store.fs.modified(entry["name"])
    return when if isinstance(when, int | float) else when.timestamp()


def pull_inbox(
    inbox: Path,
    settle: float,
    *,
    skip: tuple[str, ...] = (".part", ".tmp"),
    always: tuple[str, ...] = ("atlas.json",),
) -> dict[Path, str] | None:
    """Download the remote inbox's waiting files into the mirror's ``inbox`` folder, keeping
    their names; returns each downloaded local path -> its object's key (None: a local store).

    Taken: objects in ``inbox/`` and directly in its dataset folders that have not changed for
    ``settle`` seconds, and every ``always`` file (``atlas.json``). Left alone: hidden names
    (so ``.ingested/`` and ``.failed/``), names ending in ``skip`` and deeper objects. A local
    copy gets its object's modification time, so the inbox's own settle check agrees; one
    already there with that size and time is not downloaded again.
    """
    found = remote_of(inbox)
    if found is None:
        return None
    store, key = found
    now = time.time()

    def ls(prefix: str) -> list[dict[str, Any]]:
        try:
            return store.fs.ls(prefix, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as err:  # noqa: BLE001
            raise store_error(store, err, f"listing {prefix}") from None

    def wanted(entry: dict[str, Any]) -> bool:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        return not name.startswith(".") and not name.lower().endswith(skip)

    objects = []
    for entry in filter(wanted, ls(key)):
        if entry["type"] == "directory":
            objects.extend(e for e in ls(entry["name"]) if e["type"] == "file" and wanted(e))
        else:
            objects.append(entry)
    pulled = {}
    for entry in objects:
        name = entry["name"].rstrip("/")
        local = inbox / name[len(key) + 1 :]
        when = _modified(store, entry)
        if local.name not in always and now - when < settle:
            continue  # a writer may still be at it: next scan
        pulled[local] = name
        with contextlib.suppress(FileNotFoundError):
            stat = local.lstat()
            if stat.st_size == entry["size"] and abs(stat.st_mtime - when) < 1:
                continue
        from atlas_assets.store.files import atomic_path

        try:
            with atomic_path(local) as tmp:
                store.fs.get_file(name, str(tmp), **_TRANSFER.get(store.url.split(":", 1)[0], {}))
                os.utime(tmp, (when, when))
        except FileNotFoundError:  # taken meanwhile (another machine's scan)
            pulled.pop(local)
        except Exception as err:  # noqa: BLE001
            raise store_error(store, err, f"reading {name}") from None
    return pulled


def move_inbox_object(key: str, moved: Path) -> None:
    """Move the inbox object ``key`` to where its local copy was moved, ``moved`` (under
    ``.ingested/`` or ``.failed/``), with the ``.error.txt`` note beside it if there is one.

    The note goes first and the original is removed last, so a failure half way leaves the
    object in the inbox: the next scan takes it again, and its content hash stops it being
    added twice.
    """
    found = remote_of(moved)
    if found is None:
        return
    store, target = found
    note = moved.with_name(moved.name + ".error.txt")
    if note.is_file():
        upload(note)
    try:
        store.fs.copy(key, target)
        store.fs.rm_file(key)
    except FileNotFoundError:
        return  # already moved (another machine's scan)
    except Exception as err:  # noqa: BLE001
        raise store_error(store, err, f"moving {key}") from None
