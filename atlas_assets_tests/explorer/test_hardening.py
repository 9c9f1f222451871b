"""The explorer against hostile clients, over real HTTP: the uvicorn server ``atlas serve`` runs,
on a free loopback port, driven by httpx and by raw sockets where a body must be chunked or slow.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from atlas_assets.explorer.server import MAX_BODY_BYTES, create_app, url_for
from atlas_assets_tests.explorer.conftest import (
    FORMULAS,
    PAYLOAD_ID,
    ExplorerMap,
    running_server,
)

# Shortened for the tests; `atlas serve` waits longer.
HEAD_TIMEOUT, BODY_TIMEOUT, WRITE_TIMEOUT = 1.0, 2.0, 2.0


@pytest.fixture(scope="module")
def base(explorer_map: ExplorerMap) -> Iterator[str]:
    app = create_app(explorer_map.dataset)
    limits = {"head_timeout": HEAD_TIMEOUT, "body_timeout": BODY_TIMEOUT}
    with running_server(app, **limits, write_timeout=WRITE_TIMEOUT) as sock:
        yield url_for(sock).rsplit("/", 1)[0]


def _json_headers(base: str) -> dict[str, str]:
    return {"Origin": base, "Content-Type": "application/json"}


def _tag_names(explorer_map: ExplorerMap) -> list[str]:
    from atlas_assets import AtlasDataset

    return [t["tag_name"] for t in AtlasDataset(explorer_map.dataset).maps[0].tags.get_tags()]


def _connect(base: str) -> socket.socket:
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(base: str, method: str, path: str, extra: str) -> bytes:
    netloc = urlsplit(base).netloc
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {netloc}\r\nOrigin: {base}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection or ``seconds`` pass: (closed, bytes read)."""
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def _local_ipv4_addresses() -> set[str]:
    """This machine's IPv4 addresses, from the kernel's routing trie (Linux)."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    return {
        line.split()[-1]
        for line, after in zip(lines, lines[1:], strict=False)
        if "/32 host LOCAL" in after
    }


# -- request bodies ---------------------------------------------------------------------------
def test_a_chunked_body_is_capped_while_it_is_read(base: str, explorer_map: ExplorerMap) -> None:
    """200 MB in chunks, no Content-Length: answered 413 before much more than the cap arrived."""
    chunk = b"[" + b" " * (1 << 20) + b"]"  # never valid JSON: nothing can be tagged by mistake
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sock = _connect(base)
    sock.sendall(
        _head(base, "POST", f"/api/maps/{explorer_map.dataset}/tags", "")[:-2]
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent, answer = 0, b""
    try:
        while sent < 200 * (1 << 20):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(framed)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _closed_within(sock, 10)[1]
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body over" in answer
    # What was sent beyond the cap sat in socket buffers (a few MB), not in the server.
    assert sent < MAX_BODY_BYTES + 16 * (1 << 20), sent


def test_an_over_long_content_length_is_refused_before_reading(base: str, explorer_map) -> None:
    answer = httpx.post(
        f"{base}/api/maps/{explorer_map.dataset}/tags",
        content=b"{}" + b" " * (MAX_BODY_BYTES + 1),
        headers=_json_headers(base),
    )
    assert answer.status_code == 413 and "request body over" in answer.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        '{"tag": "deep", "indices": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"tag": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + ', "indices": [1]}',
        '{"tag": "deep", "indices": [' + "9" * 30 + "]}",
        '{"tag": "deep", "indices": [-' + "9" * 30 + "]}",
        '{"tag": "deep", "indices": [' + "9" * 5000 + "]}",
        '{"tag": "deep", "indices": [1], "remove": ' + "9" * 5000 + "}",
        '{"tag": "deep", "indices": [1e999]}',
        '{"tag": "deep", "indices": [NaN]}',
    ],
    ids=[
        "nested-lists",
        "nested-objects",
        "int64-overflow",
        "negative-overflow",
        "5000-digits",
        "5000-digit-flag",
        "float-overflow",
        "nan",
    ],
)
def test_deep_json_and_huge_numbers_are_a_400(base: str, explorer_map, body: str) -> None:
    for path in ("tags", "export"):
        answer = httpx.post(
            f"{base}/api/maps/{explorer_map.dataset}/{path}",
            content=body,
            headers=_json_headers(base),
        )
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
        message = answer.json()["error"]
        assert message and "set_int_max_str_digits" not in message
    assert "deep" not in _tag_names(explorer_map)


# -- slow clients -----------------------------------------------------------------------------
def test_a_client_that_never_sends_a_request_is_cut_off(base: str) -> None:
    sock = _connect(base)
    closed, _ = _closed_within(sock, HEAD_TIMEOUT + 3)
    sock.close()
    assert closed, "an idle new connection was kept open"


def test_a_request_head_trickled_byte_by_byte_times_out(base: str) -> None:
    """Slowloris: every byte resets no timer; the whole head has a deadline."""
    sock = _connect(base)
    head = b"GET /api/config HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    started, closed = time.monotonic(), False
    try:
        for byte in head:
            sock.sendall(bytes([byte]))
            closed, _ = _closed_within(sock, 0.2)
            if closed:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    sock.close()
    assert closed, "a request head trickled for 40 s was still being read"
    assert time.monotonic() - started < HEAD_TIMEOUT + 3


def test_a_stalled_body_times_out(base: str, explorer_map: ExplorerMap) -> None:
    sock = _connect(base)
    sock.sendall(
        _head(base, "POST", f"/api/maps/{explorer_map.dataset}/tags", "Content-Length: 100\r\n")
        + b'{"tag": "slow", '
    )
    started = time.monotonic()
    closed, answer = _closed_within(sock, BODY_TIMEOUT + 5)
    sock.close()
    assert closed, "a body stalled after 16 of 100 bytes kept its connection"
    assert time.monotonic() - started < BODY_TIMEOUT + 3
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert "slow" not in _tag_names(explorer_map)


def test_a_body_trickled_byte_by_byte_times_out(base: str, explorer_map: ExplorerMap) -> None:
    sock = _connect(base)
    sock.sendall(
        _head(base, "POST", f"/api/maps/{explorer_map.dataset}/tags", "Content-Length: 400\r\n")
    )
    started, closed = time.monotonic(), False
    try:
        for byte in b'{"tag": "trickle", "indices": [1' + b" " * 360 + b"]}":
            sock.sendall(bytes([byte]))
            closed, _ = _closed_within(sock, 0.1)
            if closed:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    sock.close()
    assert closed and time.monotonic() - started < BODY_TIMEOUT + 3
    assert "trickle" not in _tag_names(explorer_map)


def test_a_client_that_stops_reading_an_answer_is_cut_off(explorer_map: ExplorerMap) -> None:
    """Ask for every row as CSV and never read it: the buffers fill, and instead of waiting
    forever (even a keep-alive close() waits for the flush) the server drops the connection."""
    body = json.dumps({"indices": list(range(len(explorer_map.ids))), "format": "csv"})
    path = f"/api/maps/{explorer_map.dataset}/export"
    app = create_app(explorer_map.dataset)
    with running_server(app, send_buffer=16384, write_timeout=WRITE_TIMEOUT) as server:
        base = url_for(server).rsplit("/", 1)[0]
        full = len(httpx.post(base + path, content=body, headers=_json_headers(base)).content)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.connect(server.getsockname())
        sock.sendall(_head(base, "POST", path, f"Content-Length: {len(body)}\r\n") + body.encode())
        time.sleep(WRITE_TIMEOUT + 2)
        closed, got = _closed_within(sock, 10)
        sock.close()
    assert full > 200_000, full
    assert closed and len(got) < full, (closed, len(got), full)


# -- what answers carry -----------------------------------------------------------------------
def test_csv_export_neutralises_formulas(base: str, explorer_map: ExplorerMap) -> None:
    answer = httpx.post(
        f"{base}/api/maps/{explorer_map.dataset}/export",
        content=json.dumps({"indices": [explorer_map.payload_index, 0], "format": "csv"}),
        headers=_json_headers(base),
    )
    assert answer.status_code == 200, answer.text
    as_text = pacsv.ConvertOptions(column_types={c: pa.string() for c in FORMULAS})
    table = pacsv.read_csv(io.BytesIO(answer.content), convert_options=as_text)
    rows = {r["arxiv_id"]: r for r in table.to_pylist()}  # exported in map order
    assert set(rows) == {PAYLOAD_ID, explorer_map.ids[0]}
    assert {c: rows[PAYLOAD_ID][c] for c in FORMULAS} == {c: "'" + v for c, v in FORMULAS.items()}
    # Ordinary cells are untouched, and Parquet (typed data, no formulas) keeps the originals.
    assert not any(str(v).startswith("'") for v in rows[explorer_map.ids[0]].values())
    parquet = httpx.post(
        f"{base}/api/maps/{explorer_map.dataset}/export",
        content=json.dumps({"indices": [explorer_map.payload_index], "format": "parquet"}),
        headers=_json_headers(base),
    )
    import pyarrow.parquet as pq

    kept = pq.read_table(io.BytesIO(parquet.content)).to_pylist()[0]
    assert {c: kept[c] for c in FORMULAS} == FORMULAS


def test_tag_colours_reach_the_page_only_as_hex(base: str, explorer_map: ExplorerMap) -> None:
    from atlas_assets.reader.tags import open_tag_store
    from atlas_assets.store import dataset_paths

    store = open_tag_store(dataset_paths(explorer_map.dataset))
    colours = {
        "colour-hex": ("#ABC", "#aabbcc"),
        "colour-name": ("RebeccaPurple", "#663399"),
        "colour-css": ("red; background: url(//evil.example/x)", None),
        "colour-expr": ("expression(alert(1))", None),
    }
    # The product only ever stores palette colours; a store written by another tool (or by
    # hand) may hold anything, so the colours are set underneath the API.
    for name in colours:
        store.replace_members(name, [])
    with sqlite3.connect(store.path) as con:
        for name, (stored, _) in colours.items():
            con.execute("UPDATE tags SET color = ? WHERE name = ?", (stored, name))
    tags = httpx.get(f"{base}/api/maps/{explorer_map.dataset}/tags").json()["tags"]
    served = {t["name"]: t["color"] for t in tags}
    assert {n: served[n] for n in colours} == {n: want for n, (_, want) in colours.items()}
    assert all(c is None or re.fullmatch("#[0-9a-f]{6}", c) for c in served.values()), served


@pytest.mark.parametrize(
    "path",
    [
        "/api/maps/{ds}/select?by=tag&value=no-such-tag",
        "/api/maps/{ds}/colours?by=../../etc/passwd",
        "/api/maps/unmapped-paths/meta",
        "/api/maps/no-such-dataset/meta",
    ],
)
def test_errors_never_show_server_paths(base: str, explorer_map: ExplorerMap, path: str) -> None:
    from atlas_assets import AtlasDataset

    AtlasDataset("unmapped-paths").add_data([{"id_x": "a", "text": "hello"}])
    answer = httpx.get(base + path.replace("{ds}", explorer_map.dataset))
    assert 400 <= answer.status_code < 500, answer.text
    message = answer.json()["error"]
    assert message
    assert str(explorer_map.root) not in message and "/tmp" not in message, message
    assert not re.search(r"(^|[\s'\"(])/\w+/", message), message


# -- beyond loopback: a token -----------------------------------------------------------------
@pytest.fixture(scope="module")
def wildcard(explorer_map: ExplorerMap) -> Iterator[tuple[str, str, str]]:
    """``atlas serve --host 0.0.0.0``, for real: (base URL, token, everything it printed)."""
    env = {**os.environ, "ATLAS_HOME": str(explorer_map.root), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atlas_assets.cli",
            "serve",
            explorer_map.dataset,
            "--host",
            "0.0.0.0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("http://" in line for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, f"atlas serve exited: {''.join(lines)}"
            time.sleep(0.1)
        time.sleep(1)  # whatever else it prints at start
        printed = "".join(lines)
        match = re.search(r"(http://[^\s/]+)/\S*[?&]token=([\w-]+)", printed)
        assert match, f"no URL with a token in: {printed!r}"
        yield match.group(1), match.group(2), printed
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(10)


def test_wildcard_bind_refuses_everything_without_the_token(
    wildcard: tuple[str, str, str], explorer_map: ExplorerMap
) -> None:
    base, token, printed = wildcard
    assert printed.count(token) == 1, printed
    ds = explorer_map.dataset
    for path in (
        "/",
        "/api/config",
        f"/api/maps/{ds}/meta",
        f"/api/maps/{ds}/points",
        "/static/app.js",
        f"/api/maps/{ds}/datums/0",
    ):
        answer = httpx.get(base + path)
        assert answer.status_code == 403, (path, answer.status_code)
        assert "token" in answer.json()["error"]
    wrong = httpx.get(f"{base}/api/config?token=not-{token}")
    assert wrong.status_code == 403
    for path in ("tags", "export"):
        answer = httpx.post(
            f"{base}/api/maps/{ds}/{path}",
            content=json.dumps({"tag": "no-token", "indices": [1, 2], "format": "csv"}),
            headers=_json_headers(base),
        )
        assert answer.status_code == 403, (path, answer.text)
    assert "no-token" not in _tag_names(explorer_map)


def test_the_token_opens_the_page_then_a_cookie_or_header_carries_it(
    wildcard: tuple[str, str, str], explorer_map: ExplorerMap
) -> None:
    base, token, _ = wildcard
    ds = explorer_map.dataset
    with httpx.Client(base_url=base) as browser:
        page = browser.get(f"/?dataset={ds}&token={token}")
        assert page.status_code == 200 and "app.js" in page.text
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/static/app.js").status_code == 200  # the cookie, no token in URL
        tagged = browser.post(
            f"/api/maps/{ds}/tags",
            content=json.dumps({"tag": "with-token", "indices": [4]}),
            headers=_json_headers(base),
        )
        assert tagged.status_code == 200, tagged.text
    assert "with-token" in _tag_names(explorer_map)
    for header in (f"token {token}", f"Bearer {token}"):
        meta = httpx.get(f"{base}/api/maps/{ds}/meta", headers={"Authorization": header})
        assert meta.status_code == 200 and meta.json()["n"] == len(explorer_map.ids)
    assert httpx.get(f"{base}/api/config", params={"token": token}).status_code == 200


def test_wildcard_bind_keeps_the_host_and_origin_checks(
    wildcard: tuple[str, str, str], explorer_map: ExplorerMap
) -> None:
    """DNS rebinding: evil.example resolving to this machine gets nothing, even with a token."""
    base, token, _ = wildcard
    auth = {"Authorization": f"token {token}"}
    rebound = httpx.get(f"{base}/api/config", headers={**auth, "Host": "evil.example"})
    assert rebound.status_code == 421
    assert httpx.get(f"{base}/api/config", headers=auth).status_code == 200
    port = urlsplit(base).port
    # This machine's own names and addresses are answered (it is reached by them)...
    own = {socket.gethostname(), "127.0.1.1", "[::1]", *_local_ipv4_addresses()}
    for name in own:
        answer = httpx.get(f"{base}/api/config", headers={**auth, "Host": f"{name}:{port}"})
        assert answer.status_code == 200, (name, answer.text)
    # ... addresses of other machines and the wildcard address are not.
    for name in ("0.0.0.0", "192.0.2.1", "[2001:db8::1]", "localhost.evil.example"):
        answer = httpx.get(f"{base}/api/config", headers={**auth, "Host": f"{name}:{port}"})
        assert answer.status_code == 421, (name, answer.text)
    cross = httpx.post(
        f"{base}/api/maps/{explorer_map.dataset}/tags",
        content=json.dumps({"tag": "cross-site", "indices": [1]}),
        headers={**auth, "Origin": "http://evil.example", "Content-Type": "application/json"},
    )
    assert cross.status_code == 403 and "cross-site" not in _tag_names(explorer_map)


def test_loopback_stays_tokenless_unless_asked(base: str, explorer_map: ExplorerMap) -> None:
    assert httpx.get(f"{base}/api/config").status_code == 200
    with running_server(create_app(explorer_map.dataset, token="s3cret")) as sock:
        url = url_for(sock, token="s3cret")
        assert parse_qs(urlsplit(url).query)["token"] == ["s3cret"]
        assert httpx.get(url.split("?")[0]).status_code == 403
        assert httpx.get(url).status_code == 200
