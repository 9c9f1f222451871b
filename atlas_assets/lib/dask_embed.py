"""Embedding as Dask tasks: texts cut into shards, one task each, on the workers of a cluster.

Only imported when a Dask scheduler address is set; ``dask`` and ``distributed`` come with the
``atlas-assets[dask]`` extra. Each worker process loads the model once, on the device
sentence-transformers picks (a GPU when it has one), and returns its shard's vectors. The caller
places each result by its shard, so a shard rerun after its worker died lands once. Shards are
cut where the in-process path would cut its batches, so the vectors are the in-process ones.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from atlas_assets.lib import embed

if TYPE_CHECKING:
    from distributed import Client, Future

# (shards done, shards in all, texts done, seconds since the first submit)
ShardProgress = Callable[[int, int, int, float], None]

# Worker threads that start at once load the model once between them.
_load_lock = threading.Lock()


def connect(address: str, timeout: float = 10.0) -> Client:
    """A client of the scheduler at ``address``, or one error naming it (nothing is submitted)."""
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(
            f"a Dask scheduler address is set ({address}) but 'distributed' is not installed: "
            "pip install 'atlas-assets[dask]'"
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConnectionError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: {err}"
        ) from None


def dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard URL, or None when it serves none."""
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):
        return None


def plan_shards(n: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each shard over ``n`` texts in :func:`embed.embed_texts`' order.

    In process, texts are encoded in calls of ``batch_size * 32`` and each call batches from its
    longest text down. Shards therefore hold whole calls, or cut one call at batch boundaries
    counted from its top, so every batch (and its padding) is the one the in-process path makes.
    ``shard_size`` is rounded up to such a boundary.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive: {shard_size}, {batch_size}")
    call = batch_size * embed._BATCHES_PER_CALL
    if shard_size >= call:
        step = -(-shard_size // call) * call
        return [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    step = -(-shard_size // batch_size) * batch_size
    bounds = []
    for lo in range(0, n, call):
        cuts = [*range(min(lo + call, n), lo, -step), lo]  # from the top of the call down
        bounds += [(start, stop) for stop, start in zip(cuts, cuts[1:], strict=False)][::-1]
    return bounds


def embed_shard(texts: Sequence[str], model: str, batch_size: int) -> np.ndarray:
    """One task: the unit vectors of a shard, by a model loaded once per worker process."""
    with _load_lock:
        embed.load_model(model, device=None)
    return embed.embed_texts(texts, model, batch_size=batch_size, device=None)


def embed_on_cluster(
    client: Client,
    texts: Sequence[str],
    model: str,
    *,
    batch_size: int = 32,
    shard_size: int = 1024,
    resources: dict[str, float] | None = None,
    progress: ShardProgress | None = None,
    name: str = "atlas-embed",
) -> np.ndarray:
    """Embed ``texts`` as Dask tasks into an ``(N, d)`` float32 array of unit vectors, in input
    order, equal to :func:`embed.embed_texts`' (transformer mode).

    Identical texts are embedded once. At most two shards per worker thread are submitted at a
    time (more as workers join), so the scheduler holds only their texts. Tasks need the
    abstract worker ``resources`` (e.g. ``{"GPU": 1}``); their keys start with ``name``. When
    this call is interrupted or fails, its tasks are cancelled: shards not yet started never
    start, and one already running finishes on its worker and is dropped.
    """
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = np.argsort([len(t) for t in unique], kind="stable")
    ordered = [str(unique[i]) for i in order]
    shards = plan_shards(len(ordered), shard_size, batch_size)
    if not shards:
        return np.zeros((0, 0), np.float32)
    from distributed import as_completed

    run = f"{name}-{uuid.uuid4().hex[:8]}"
    out: np.ndarray | None = None
    waiting = iter(enumerate(shards))
    live: dict[str, tuple[int, Future]] = {}  # submitted, not yet placed: key -> (shard, future)
    pending = as_completed(loop=client.loop)

    def submit_more() -> None:
        window = max(2, 2 * sum(client.nthreads().values()))
        while pending.count() < window:
            i, (lo, hi) = next(waiting, (None, (0, 0)))
            if i is None:
                return
            future = client.submit(
                embed_shard,
                ordered[lo:hi],
                model,
                batch_size,
                key=f"{run}-{i}",
                resources=resources,
                pure=False,
            )
            live[future.key] = (i, future)
            pending.add(future)

    start, done, texts_done = time.perf_counter(), 0, 0
    try:
        submit_more()
        for future in pending:
            lo, hi = shards[live.pop(future.key)[0]]
            vectors = future.result()
            future.release()
            if out is None:
                out = np.empty((len(ordered), vectors.shape[1]), np.float32)
            out[order[lo:hi]] = vectors
            done, texts_done = done + 1, texts_done + hi - lo
            submit_more()
            if progress:
                progress(done, len(shards), texts_done, time.perf_counter() - start)
    except BaseException:
        # Interrupted (a cancelled run) or failed: queued shards never start.
        client.cancel([f for _, f in live.values()])
        raise
    assert out is not None and done == len(shards)
    return out[inverse.reshape(-1)]
