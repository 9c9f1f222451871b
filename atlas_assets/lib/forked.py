"""Work in forked worker processes that inherit their inputs, so nothing large is pickled.

igraph and scikit-learn's text vectoriser hold the GIL, so threads would take turns; a forked
worker starts with the parent's memory (copy-on-write) and only its result travels back. Used
where one machine's cores help a single large job: the topic tree from ``PARALLEL_TOPICS_ROWS``.
Linux only: ``fork`` is unsafe on macOS and absent on Windows, where everything runs in-process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Calls a worker inherits: set in the parent before the fork, read in the worker by key.
_INHERITED: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
_keys = itertools.count()


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def available() -> bool:
    """Whether forked workers are worth it here: Linux, and more than one core."""
    return sys.platform == "linux" and cores() >= 2


def _run(key: int, index: int | None) -> Any:
    fn, args = _INHERITED[key]
    return fn(*args) if index is None else fn(args[0][index])


@contextmanager
def _inherited(fn: Callable[..., Any], args: tuple[Any, ...]) -> Iterator[int]:
    key = next(_keys)
    _INHERITED[key] = (fn, args)
    try:
        yield key
    finally:
        del _INHERITED[key]


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def forked_map(
    fn: Callable[[T], R], items: Sequence[T], order: Sequence[int] | None = None
) -> list[R]:
    """``[fn(item) for item in items]`` on every core, in forked workers; ``order`` is the order
    to start them in (largest first, so the workers finish together). In-process when forking
    is not available or there is a single item."""
    if not available() or len(items) < 2:
        return [fn(item) for item in items]
    with _inherited(fn, (items,)) as key, _pool(min(cores(), len(items))) as pool:
        futures = {i: pool.submit(_run, key, i) for i in (order or range(len(items)))}
        return [futures[i].result() for i in range(len(items))]


@contextmanager
def forked_call(fn: Callable[..., R], *args: Any, enabled: bool = True) -> Iterator[Future[R]]:
    """``fn(*args)`` in a forked worker while the ``with`` block runs; the future gives its
    result. In-process (before the block) when forking is not available or not ``enabled``."""
    if not (enabled and available()):
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        yield future
        return
    with _inherited(fn, args) as key, _pool(1) as pool:
        yield pool.submit(_run, key, None)
