"""Writers' locks across machines on a remote store: one lease object per lock, on the store.

On a local store a writer's lock is a ``flock`` (:func:`~atlas_assets.store.files.locked`).
Machines sharing a remote store share no file system: there the flock serialises the processes
of one machine and, inside it, the writer also holds the lock's *lease*, the object
``locks/<the lock's path>`` (named by :func:`~atlas_assets.store.layout.lease_path`), worked
only by S3's conditional writes:

* taken by creating it (``If-None-Match: *``): one taker wins. It says who holds it (host, pid,
  program, a token of this holding, since when) and how long it lasts unrenewed;
* renewed by its holder, a thread rewriting it ``If-Match`` its ETag every third of that time;
* waited for by polling with backoff, logging once per holder who holds it;
* taken over once lapsed: a waiter that saw the same ETag for the holder's whole duration, by
  its own clock (no two machines' clocks are compared), replaces it ``If-Match`` that ETag, so of
  two takers one wins. A lease left under the very lock file whose flock the waiter now holds
  (same file, same running kernel: a killed process of this machine) is taken over at once;
* released by deleting it ``If-Match`` its last ETag: one taken over meanwhile is not ours and
  stays.

Stores without conditional writes (``memory://``, ...) have no lease: their flock is all, as
before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atlas_assets.store.remote import (
    RemoteStore,
    StoreConfigError,
    precondition_failed,
    remote_of,
    store_error,
)

log = logging.getLogger(__name__)

LEASE_ENV = "ATLAS_LEASE_SECONDS"
# A lease not renewed for this long is its dead holder's (kill -9, a lost machine) and is taken
# over: long enough that a stalled process or a slow store still renews in time, short enough
# that a writer killed on another machine holds up the next one by about a minute.
LEASE_SECONDS = 60.0
# Renewals per lease duration: two in a row may fail (a slow request) before the lease lapses.
RENEWALS = 3
# Readers asking whether a lease is held (not writers, who never compare clocks) take one whose
# holder's clock says it lapsed this long ago as lapsed: machines' clocks agree within a minute.
CLOCK_SLACK = 60.0
# A waiter asks again after POLL_FIRST seconds, doubling up to POLL_MAX (a GET every 2 s costs
# nothing) or a quarter of the holder's lease (a lapse is noticed within a quarter of it).
POLL_FIRST, POLL_MAX = 0.05, 2.0
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def lease_seconds() -> float:
    """How long this process's leases last unrenewed: ``$ATLAS_LEASE_SECONDS``, else 60."""
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return LEASE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise StoreConfigError(f"{LEASE_ENV}={raw!r}: expected a positive number of seconds")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _lock_file_id(flock: Path | None) -> str | None:
    """The running kernel and the lock file's inode: equal only for the same file on the same
    running machine, whose flock then excludes the lease's holder (None: cannot tell)."""
    if flock is None:
        return None
    try:
        boot = _BOOT_ID.read_text().strip()
        st = flock.stat()
    except OSError:
        return None
    return f"{boot}:{st.st_dev}:{st.st_ino}"


def _holder(doc: dict[str, Any]) -> str:
    return (
        f"pid {doc.get('pid', '?')} on {doc.get('host', '?')} ({doc.get('program', '?')}) "
        f"since {doc.get('since', '?')}"
    )


def _duration(doc: dict[str, Any], default: float) -> float:
    """How long the holder said its lease lasts unrenewed (its setting, not ours)."""
    try:
        value = float(doc.get("seconds", default))
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) and value > 0 else default


class _Watch:
    """A waiter's view of a held lease: since when (by this process's clock) its ETag has stayed
    the same, whose holding it last said it waits for, and its backoff. Writers and
    :func:`wait_released` judge a lapse the same way through it."""

    def __init__(self) -> None:
        self.etag, self.since = "", 0.0
        self.told: str | None = None
        self.delay = POLL_FIRST

    def lapsed(self, etag: str, duration: float) -> bool:
        """Whether ``etag`` has stayed the stored one for ``duration`` seconds."""
        now = time.monotonic()
        if etag != self.etag:
            self.etag, self.since = etag, now
        return now - self.since >= duration

    def first_sight(self, doc: dict[str, Any]) -> bool:
        """Whether ``doc`` is a holding not seen before (so the wait is logged once each)."""
        new = doc.get("token") != self.told
        self.told = doc.get("token")
        return new

    def sleep(self, duration: float) -> None:
        """Wait before asking again: doubling up to ``POLL_MAX`` or a quarter of ``duration``."""
        time.sleep(self.delay)
        self.delay = max(POLL_FIRST, min(self.delay * 2, POLL_MAX, duration / 4))


class _Lease:
    """One lease object of a store, and this process's holding of it (if any)."""

    def __init__(self, store: RemoteStore, key: str) -> None:
        self.store, self.key = store, key
        self.bucket, _, self.name = key.partition("/")
        self.where = f"{store.url}/{key[len(store.root.lstrip('/')) + 1 :]}"
        self.doc: dict[str, Any] = {}
        self.etag = ""
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, doc: dict[str, Any], **condition: str) -> str:
        """Write ``doc`` under ``condition``; its new ETag. A lost condition is raised as is."""
        body = json.dumps(doc, sort_keys=True).encode()
        answer = self.store.fs.call_s3(
            "put_object", Bucket=self.bucket, Key=self.name, Body=body, **condition
        )
        return str(answer["ETag"])

    def get(self) -> tuple[dict[str, Any], str] | None:
        """The stored document and its ETag, read in one request; None if there is none."""
        from fsspec.asyn import sync

        fs = self.store.fs

        async def read() -> tuple[bytes, str]:
            answer = await fs._call_s3("get_object", Bucket=self.bucket, Key=self.name)
            return await answer["Body"].read(), str(answer["ETag"])

        try:
            data, etag = sync(fs.loop, read)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001
            raise store_error(self.store, err, f"reading {self.key}") from None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        return (doc if isinstance(doc, dict) else {}), etag

    def _ours(self) -> str | None:
        """The ETag of the stored lease if it is still this holding (a write whose answer was
        lost did happen), else None."""
        with contextlib.suppress(StoreConfigError):
            current = self.get()
            if current is not None and current[0].get("token") == self.doc.get("token"):
                return current[1]
        return None

    def _stamp(self) -> None:
        self.doc["since"] = self.doc["renewed"] = _now()
        self.doc["renewed_at"] = time.time()

    def acquire(self, flock: Path | None) -> None:
        """Wait for the lease and take it (see the module's docstring)."""
        seconds = lease_seconds()
        self.doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "program": " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])[:80] or "python",
            "token": uuid.uuid4().hex,
            "file": _lock_file_id(flock),
            "seconds": seconds,
            "renewals": 0,
        }
        watch = _Watch()
        current: tuple[dict[str, Any], str] | None = None  # None: free when last looked
        while True:
            if current is None:
                try:
                    self._stamp()
                    self.etag = self.put(self.doc, IfNoneMatch="*")
                    break
                except Exception as err:  # noqa: BLE001
                    if not precondition_failed(err):
                        raise store_error(self.store, err, f"writing {self.key}") from None
            current = self.get()  # while it is held, a waiter only reads (GETs are cheap)
            if current is None:
                continue  # released meanwhile: take it now
            doc, etag = current
            if doc.get("token") == self.doc["token"]:  # our PUT happened, its answer was lost
                self.etag = etag
                break
            duration = _duration(doc, seconds)
            gone = _left_by_the_gone(doc, flock)
            if gone or watch.lapsed(etag, duration):
                try:
                    self._stamp()
                    self.etag = self.put(self.doc, IfMatch=etag)
                except Exception as err:  # noqa: BLE001
                    if precondition_failed(err) or isinstance(err, FileNotFoundError):
                        current = None  # another taker won, or it was released: look again
                        continue
                    raise store_error(self.store, err, f"writing {self.key}") from None
                why = (
                    "its process on this machine is gone"
                    if gone
                    else f"it went {duration:g} s without renewal"
                )
                log.warning("%s: took over the lease of %s: %s", self.where, _holder(doc), why)
                break
            if watch.first_sight(doc):
                log.warning(
                    "%s: waiting for %s to finish (taken over if not renewed for %g s)",
                    self.where,
                    _holder(doc),
                    duration,
                )
            watch.sleep(duration)
        self._thread = threading.Thread(
            target=self._renew, name=f"atlas lease {self.where}", daemon=True
        )
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.doc["seconds"] / RENEWALS):
            doc = {
                **self.doc,
                "renewals": self.doc["renewals"] + 1,
                "renewed": _now(),
                "renewed_at": time.time(),
            }
            try:
                self.etag = self.put(doc, IfMatch=self.etag)
                self.doc = doc
            except Exception as err:  # noqa: BLE001
                if not (precondition_failed(err) or isinstance(err, FileNotFoundError)):
                    text = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                    log.warning("%s: renewing the lease failed (%s)", self.where, text)
                    continue
                tag = self._ours()  # the PUT happened, its answer was lost?
                if tag is None:
                    self._lose()
                    return
                self.etag, self.doc = tag, doc

    def _lose(self) -> None:
        self.lost = True
        current = None
        with contextlib.suppress(StoreConfigError):
            current = self.get()
        who = _holder(current[0]) if current else "no one"
        log.error(
            "%s: this process's lease lapsed (it was not renewed for %g s) and is now held by "
            "%s: another writer may have worked meanwhile",
            self.where,
            self.doc["seconds"],
            who,
        )

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this holding."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost:
            return
        failure: Exception | None = None
        for _ in range(2):
            try:
                self.store.fs.call_s3(
                    "delete_object", Bucket=self.bucket, Key=self.name, IfMatch=self.etag
                )
                return
            except Exception as err:  # noqa: BLE001
                if not (precondition_failed(err) or isinstance(err, FileNotFoundError)):
                    failure = err
                    break
            tag = self._ours()  # a renewal whose answer was lost, or someone else's now
            if tag is None:
                self._lose()
                return
            self.etag = tag
        # A store that refuses a conditional delete: delete it if it is still ours (nobody takes
        # a lease over before it lapses, and it was renewed less than a lapse ago).
        if self._ours() is not None:
            with contextlib.suppress(Exception):
                self.store.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.name)
                return
        log.warning(
            "%s: could not remove the lease (%s): it lapses %g s from now",
            self.where,
            failure,
            self.doc["seconds"],
        )


def _shared(path: Path) -> _Lease | None:
    found = remote_of(path)
    if found is None or not found[0].url.startswith("s3://"):
        return None
    return _Lease(*found)


def _left_by_the_gone(doc: dict[str, Any], flock: Path | None) -> bool:
    """Whether the lease was left under ``flock``, whose flock the caller saw free: its holder
    (a process of this machine) is gone."""
    mine = _lock_file_id(flock)
    return mine is not None and doc.get("file") == mine


def holder(path: Path, *, flock: Path | None = None) -> dict[str, Any] | None:
    """Who holds the lease ``path`` now (its document), for a caller that saw ``flock`` free:
    None if no one (a local store, no lease, one left by a killed process of this machine, one
    whose renewal time is past its duration by the holder's clock, give or take a minute)."""
    shared = _shared(path)
    current = shared.get() if shared else None
    if current is None or _left_by_the_gone(current[0], flock):
        return None
    doc = current[0]
    try:
        lapsed = time.time() - float(doc["renewed_at"]) > _duration(doc, 0) + CLOCK_SLACK
    except (KeyError, TypeError, ValueError):
        lapsed = False
    return None if lapsed else doc


def wait_released(path: Path, *, flock: Path | None = None) -> None:
    """Wait, without taking it, until the lease ``path`` is free or lapsed (as a writer judges
    it: the same ETag for its holder's whole duration); ``flock`` as in :func:`holder`."""
    shared = _shared(path)
    if shared is None:
        return
    watch, seconds = _Watch(), lease_seconds()
    while (current := shared.get()) is not None and not _left_by_the_gone(current[0], flock):
        doc, etag = current
        duration = _duration(doc, seconds)
        if watch.lapsed(etag, duration):
            return
        if watch.first_sight(doc):
            log.warning("%s: waiting for %s to finish", shared.where, _holder(doc))
        watch.sleep(duration)


@contextlib.contextmanager
def lease(path: Path, *, flock: Path | None = None) -> Iterator[None]:
    """Hold the lease object ``path`` of a remote store for the body: wait while another
    holds it, renew it meanwhile, delete it after. ``flock`` is the local lock file held
    around it. A no-op for a local store and stores without conditional writes."""
    held = _shared(path)
    if held is None:
        yield
        return
    held.acquire(flock)
    try:
        yield
    finally:
        held.release()
