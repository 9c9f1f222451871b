"""Publishing a map whole: builds write new files, and one small manifest, written last, names them.

A Dagster run writes the map resources it builds into its own folder,
``resources/builds/<run id>/``, never over a file a reader may be using. When the run has
succeeded, :func:`commit` rewrites ``resources/manifest.json`` (atomically, last) so that it names
the run's files, keeping the previous map's files for the resources the run did not build.
Readers resolve the manifest once per open (:func:`published`), so they see the previous map or
the new one, never a mix; a build killed at any point leaves the previous map as it was, and its
folder is removed later. Files that the manifest stops naming are removed after a grace period,
so a reader that opened the previous map can finish reading it.

A run that rebuilt only some resources (one asset materialized from the Dagster UI) is
committed only if the map it read is still the published one; otherwise it would publish
resources derived from a map that no longer exists, and :class:`SupersededError` says so.

The same shape serves an object store, which has no rename (``store/remote.py``): each object
is uploaded once under a new name as it is written, the commit checks they are all there, and
the manifest is one small PUT, conditional on S3 on the ETag the committer read, so two
machines' commits never overwrite each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atlas_assets.store.files import (
    clean_temp_files,
    locked,
    now_iso,
    read_json,
    remove_file,
    write_json,
)
from atlas_assets.store.layout import DatasetPaths, resource_key
from atlas_assets.store.remote import (
    ConflictError,
    fetch,
    remote_of,
    remove_tree,
    upload_missing,
    version_tag,
)

BUILD_DOC = "build.json"
_DROPPED = ".dropped"
# Superseded files stay this long after the manifest stops naming them (readers that opened the
# previous map are still reading them); ATLAS_PUBLISH_GRACE_SECONDS overrides it.
GRACE_SECONDS = 600.0
# A build folder that no run committed or discarded is removed once its writer is gone and
# nothing was written to it for this long (normally the publishing sensor discards it sooner).
ABANDONED_SECONDS = 24 * 3600.0
_HISTORY = 100  # committed build ids remembered, so committing one twice changes nothing
_CAS_ATTEMPTS = 5  # commits retried when another machine replaced the manifest meanwhile


class SupersededError(RuntimeError):
    """A partial build read a map that another build replaced before it could be committed."""


def grace_seconds() -> float:
    return float(os.environ.get("ATLAS_PUBLISH_GRACE_SECONDS", GRACE_SECONDS))


@dataclass(frozen=True)
class PublishedMap:
    """One published version of a dataset's map, as named by its manifest."""

    paths: DatasetPaths
    generation: int  # commits so far (0: no manifest yet, files from before manifests)
    build: str | None  # the build (Dagster run id) of the last commit
    resources: dict[str, str]  # resource key -> its file, relative to the resources folder
    config: dict[str, Any] | None  # the index configuration the map was built with
    retired: dict[str, float] = field(default_factory=dict)  # unnamed entries -> since when
    history: tuple[str, ...] = ()  # committed builds, oldest first
    # The manifest object's ETag when a writer read it (see _current); None: write it plainly.
    etag: str | None = field(default=None, compare=False)

    def path(self, key: str) -> Path:
        """The file of resource ``key`` (see :func:`resource_key`); a path that does not exist
        if this map has no such resource."""
        rel = self.resources.get(key)
        if rel is None:
            return self.paths.resources / "unpublished" / f"{key}.arrow"
        path = self.paths.resources / rel
        fetch(path)  # on a remote store: downloaded once into the read cache, by build id
        return path

    @property
    def stamp(self) -> tuple:
        """Changes whenever another version is published (for caches keyed by map version)."""
        if self.generation:
            return (self.generation, self.build)
        return tuple(
            (rel, self.path(key).stat().st_mtime_ns if self.path(key).exists() else None)
            for key, rel in sorted(self.resources.items())
        )


def published(paths: DatasetPaths) -> PublishedMap:
    """The dataset's published map, resolved now (one read of the manifest)."""
    try:
        doc = read_json(paths.manifest)
    except FileNotFoundError:
        # A store written before manifests: its resource files sit in the resources folder.
        legacy = {}
        if paths.resources.is_dir():
            legacy = {f.name[: -len(".arrow")]: f.name for f in paths.resources.glob("*.arrow")}
        return PublishedMap(paths, 0, None, legacy, None)
    if remote_of(paths.manifest) is not None:
        _prune_read_cache(paths, doc)
    return PublishedMap(
        paths,
        int(doc["generation"]),
        doc.get("build"),
        dict(doc["resources"]),
        doc.get("config"),
        dict(doc.get("retired", {})),
        tuple(doc.get("history", ())),
    )


def _prune_read_cache(paths: DatasetPaths, doc: dict[str, Any]) -> None:
    """Remove this machine's copies of builds a remote manifest retired more than the grace
    period ago (their objects are gone or going; a reader that opened them has them mapped)."""
    now = time.time()
    in_use = {_top(rel) for rel in doc.get("resources", {}).values()}
    for top, since in doc.get("retired", {}).items():
        local = paths.resources / top
        if top not in in_use and now - since >= grace_seconds() and local.exists():
            shutil.rmtree(local, ignore_errors=True)


def _map_config(paths: DatasetPaths) -> dict[str, Any] | None:
    try:
        maps = read_json(paths.meta).get("maps") or []
    except FileNotFoundError:
        return None
    return maps[0] if maps else None


def _build_doc(paths: DatasetPaths, build: str) -> dict[str, Any] | None:
    try:
        return read_json(paths.build_dir(build) / BUILD_DOC)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class RunPaths(DatasetPaths):
    """A dataset's paths as one build (a Dagster run) sees them.

    :meth:`resource` finds the run's own files first (then those of the runs it re-executes),
    then the published map's; :meth:`output` is where the run writes a resource; nothing the
    run does changes the published map until :func:`commit`. Build with :func:`bind_run`.
    """

    build: str = ""
    parents: tuple[str, ...] = ()  # the runs this one re-executes, nearest first
    base: int = 0  # the generation of the published map when the run bound its paths
    config: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.build, *self.parents)

    def _resolve(self, key: str) -> Path:
        for build in self.chain:
            folder = self.build_dir(build)
            if (folder / f"{key}.arrow").is_file():
                return folder / f"{key}.arrow"
            if (folder / f"{key}{_DROPPED}").exists():
                return self.resources / "unpublished" / f"{key}.arrow"
        return published(self).path(key)

    def output(self, name: str, part: str | None = None) -> Path:
        """Where this build writes resource ``name`` (or one of its parts)."""
        key = resource_key(name, part)
        folder = self._start()
        (folder / f"{key}{_DROPPED}").unlink(missing_ok=True)
        return folder / f"{key}.arrow"

    def drop(self, name: str) -> None:
        """Record that this build removes resource ``name`` and its parts from the map (the
        map's configuration turned it off)."""
        resource_key(name)
        folder = self._start()
        keys = {name} | {k for k in published(self).resources if k.startswith(f"{name}.")}
        keys |= {f.name[: -len(".arrow")] for f in folder.glob(f"{name}.*arrow")}
        for key in keys:
            (folder / f"{key}.arrow").unlink(missing_ok=True)
            write_json(folder / f"{key}{_DROPPED}", {"dropped": key})

    def pinned_config(self) -> dict[str, Any] | None:
        """The index configuration this build uses throughout: the one recorded when the
        first run of the chain started writing, else the one read when the paths were bound,
        so a configuration changed mid-run never mixes into the build."""
        for build in reversed(self.chain):
            doc = _build_doc(self, build)
            if doc is not None:
                return doc.get("config")
        return self.config

    def _start(self) -> Path:
        folder = self.build_dir(self.build)
        if not (folder / BUILD_DOC).is_file():
            write_json(
                folder / BUILD_DOC,
                {
                    "build": self.build,
                    "parents": list(self.parents),
                    "base": self.base,
                    "config": self.pinned_config(),
                    "started": time.time(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
        return folder


def bind_run(paths: DatasetPaths, build: str, parents: tuple[str, ...] = ()) -> RunPaths:
    """The paths of ``paths``'s dataset as build ``build`` (a run id) sees them."""
    paths.build_dir(build)  # validates the id
    return RunPaths(
        paths.root,
        paths.namespace,
        paths.slug,
        build=build,
        parents=tuple(parents),
        base=published(paths).generation,
        config=_map_config(paths),
    )


def _top(rel: str) -> str:
    """The entry of the resources folder a file belongs to: its build folder, or itself."""
    parts = rel.split("/")
    return "/".join(parts[:2]) if parts[0] == "builds" else parts[0]


def _current(paths: DatasetPaths) -> PublishedMap:
    """The published map as a writer (holding the publish lock) reads it: on S3 with the
    manifest's ETag, taken first, so the manifest is replaced only if no other machine
    replaced it since (a compare-and-swap; :class:`~atlas_assets.store.remote.ConflictError`)."""
    tag = version_tag(paths.manifest)
    return replace(published(paths), etag=tag)


def _write_manifest(paths: DatasetPaths, current: PublishedMap, **changes: Any) -> None:
    doc = {
        "format": 1,
        "generation": current.generation,
        "build": current.build,
        "committed": now_iso(),
        "config": current.config,
        "resources": current.resources,
        "retired": current.retired,
        "history": list(current.history)[-_HISTORY:],
    }
    doc.update(changes)
    write_json(paths.manifest, doc, expect=current.etag)


def _chain_docs(paths: DatasetPaths, build: str) -> list[tuple[str, dict[str, Any]]]:
    """``(build, its document)`` for the build and the builds it re-executes, nearest first."""
    doc = _build_doc(paths, build)
    if doc is None:
        return []
    chain = [(build, doc)]
    for parent in doc.get("parents", []):
        parent_doc = _build_doc(paths, parent)
        if parent_doc is not None:
            chain.append((parent, parent_doc))
    return chain


def commit(paths: DatasetPaths, build: str) -> PublishedMap:
    """Publish what build ``build`` (and the runs it re-executes) wrote, in one manifest write.

    Committing a build twice, or one that wrote nothing, changes nothing. Raises
    :class:`SupersededError` (and publishes nothing) if the build rebuilt only part of the map
    and another build was published since it started reading.

    On S3 the manifest is replaced by a conditional PUT: if another machine published meanwhile,
    the commit is worked out again over what it published (a few times at most).
    """
    for attempt in range(_CAS_ATTEMPTS):
        try:
            return _commit(paths, build)
        except ConflictError:
            if attempt == _CAS_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _commit(paths: DatasetPaths, build: str) -> PublishedMap:
    with locked(paths.publish_lock):
        current = _current(paths)
        chain = _chain_docs(paths, build)
        if not chain or _settled(current, build):
            return current
        staged: dict[str, str | None] = {}
        for name, _ in reversed(chain):  # the nearest run's files win
            folder = paths.build_dir(name)
            for f in folder.glob("*.arrow"):
                staged[f.name[: -len(".arrow")]] = f"builds/{name}/{f.name}"
            for f in folder.glob(f"*{_DROPPED}"):
                staged[f.name[: -len(_DROPPED)]] = None
        resources = dict(current.resources)
        for key, rel in staged.items():
            if rel is None:
                resources.pop(key, None)
            else:
                resources[key] = rel
        for name, _ in chain:  # every file the manifest will name is on the store first
            upload_missing(paths.build_dir(name))
        base = min(doc.get("base", 0) for _, doc in chain)
        if base != current.generation and not set(current.resources) <= set(staged):
            _discard_locked(paths, current, [name for name, _ in chain])
            raise SupersededError(
                f"{paths.identifier}: build {build} rebuilt {sorted(staged)} from map version "
                f"{base}, but version {current.generation} was published meanwhile; run it again"
            )
        now = time.time()
        in_use = {_top(rel) for rel in resources.values()}
        retired = {k: v for k, v in current.retired.items() if k not in in_use}
        gone = [_top(rel) for rel in current.resources.values()]
        gone += [f"builds/{name}" for name, _ in chain]
        for top in gone:
            if top not in in_use:
                retired.setdefault(top, now)
        _write_manifest(
            paths,
            current,
            generation=current.generation + 1,
            build=build,
            config=chain[-1][1].get("config"),
            resources=resources,
            retired=retired,
            history=[*current.history, *(name for name, _ in reversed(chain))][-_HISTORY:],
        )
    collect_garbage(paths)
    return published(paths)


def _settled(current: PublishedMap, build: str) -> bool:
    """Whether ``build`` was committed or discarded already (never to be committed again)."""
    top = f"builds/{build}"
    in_use = {_top(rel) for rel in current.resources.values()}
    return build in current.history or top in current.retired or top in in_use


def _discard_locked(paths: DatasetPaths, current: PublishedMap, builds: list[str]) -> None:
    in_use = {_top(rel) for rel in current.resources.values()}
    retired = dict(current.retired)
    now = time.time()
    for build in builds:
        top = f"builds/{build}"
        if top not in in_use and paths.build_dir(build).exists():
            retired.setdefault(top, now)
    if retired != current.retired:
        _write_manifest(paths, current, retired=retired)


def discard(paths: DatasetPaths, build: str) -> None:
    """Give up build ``build`` (its run failed): it is never published and its folder goes
    after the grace period (a re-execution of the run may still read it until then)."""
    for attempt in range(_CAS_ATTEMPTS):
        with locked(paths.publish_lock):
            current = _current(paths)
            if _settled(current, build):
                return
            try:
                _discard_locked(paths, current, [build])
                return
            except ConflictError:
                if attempt == _CAS_ATTEMPTS - 1:
                    raise


def pending_builds(paths: DatasetPaths) -> list[str]:
    """Builds that wrote something and were neither committed nor discarded, oldest first."""
    folder = paths.resources / "builds"
    if not folder.is_dir():
        return []
    current = published(paths)
    found = []
    for build_dir in folder.iterdir():
        name = build_dir.name
        if _settled(current, name):
            continue
        doc = _build_doc(paths, name)
        if doc is not None:
            found.append((doc.get("started", 0), name))
    return [name for _, name in sorted(found)]


def process_alive(host: str | None, pid: int | None, started: float | None = None) -> bool | None:
    """Whether process ``pid`` on ``host`` is still the one that started before ``started``
    (epoch seconds); None if that cannot be told from here (another machine, no pid)."""
    import psutil

    if host != socket.gethostname() or pid is None:
        return None
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    return started is None or created <= started + 1.0  # else the pid was reused


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()]
    return max(times)


def collect_garbage(paths: DatasetPaths) -> list[str]:
    """Remove superseded and abandoned files of the dataset's maps; returns what went.

    Entries the manifest stopped naming go after the grace period; build folders nobody
    committed or discarded go once their writer is gone and they are a day old; temporary
    files of killed writers go as in :func:`~atlas_assets.store.files.clean_temp_files`.
    """
    try:
        read_json(paths.manifest)
    except FileNotFoundError:
        return []
    removed = []
    now = time.time()
    with locked(paths.publish_lock):
        current = _current(paths)
        in_use = {_top(rel) for rel in current.resources.values()}
        retired = dict(current.retired)
        for top, since in current.retired.items():
            if top not in in_use and now - since < grace_seconds():
                continue
            if top not in in_use:
                target = paths.resources / top
                if target.is_dir() or top.startswith("builds/"):
                    remove_tree(target)
                else:
                    remove_file(target)
                removed.append(top)
            del retired[top]
        builds = paths.resources / "builds"
        for folder in builds.iterdir() if builds.is_dir() else []:
            top = f"builds/{folder.name}"
            if top in in_use or top in retired or folder.name in current.history:
                continue
            doc = _build_doc(paths, folder.name) or {}
            alive = process_alive(doc.get("host"), doc.get("pid"), doc.get("started"))
            if alive is not True and now - _newest_mtime(folder) > ABANDONED_SECONDS:
                remove_tree(folder)
                removed.append(top)
        if retired != current.retired:
            # Another machine's commit won meanwhile: its manifest still lists what went here,
            # and the next collection drops it.
            with contextlib.suppress(ConflictError):
                _write_manifest(paths, current, retired=retired)
        clean_temp_files(paths.resources)
    return removed
