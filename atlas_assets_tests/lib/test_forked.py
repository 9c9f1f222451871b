"""lib.forked: work in forked workers that inherit their inputs."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import atlas_assets.lib.forked as forked

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="forked workers: Linux only")


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(forked, "cores", lambda: 2)


@linux_only
def test_forked_map_keeps_the_order_and_runs_in_workers(two_cores):
    big = np.arange(1_000_000)  # inherited by the workers, never pickled

    def task(i: int) -> tuple[int, int, int]:
        return i, int(big[i * 1000]), os.getpid()

    out = forked.forked_map(task, list(range(6)), order=[5, 4, 3, 2, 1, 0])
    assert [(i, v) for i, v, _ in out] == [(i, i * 1000) for i in range(6)]
    pids = {pid for _, _, pid in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert forked._INHERITED == {}  # nothing kept after the pool


@linux_only
def test_forked_call_runs_beside_the_block_and_reraises(two_cores):
    with forked.forked_call(os.getpid) as pid:
        assert pid.result() != os.getpid()
    with forked.forked_call(int, "not a number") as bad, pytest.raises(ValueError):
        bad.result()
    assert forked._INHERITED == {}


def test_in_process_on_one_core_or_when_disabled(monkeypatch):
    monkeypatch.setattr(forked, "cores", lambda: 1)
    assert not forked.available()
    out = forked.forked_map(lambda i: (i, os.getpid()), [0, 1, 2])
    assert out == [(0, os.getpid()), (1, os.getpid()), (2, os.getpid())]
    with forked.forked_call(os.getpid) as pid:
        assert pid.result() == os.getpid()
    monkeypatch.setattr(forked, "cores", lambda: 2)
    with forked.forked_call(os.getpid, enabled=False) as pid:
        assert pid.result() == os.getpid()
    with forked.forked_call(int, "x", enabled=False) as bad, pytest.raises(ValueError):
        bad.result()
