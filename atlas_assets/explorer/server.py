"""The explorer's HTTP server: a static page plus a small JSON/binary API over :class:`MapView`.

Security, because the page shows other people's texts and can write tags:

* it binds 127.0.0.1 unless told otherwise, and answers only requests whose ``Host`` is a
  loopback name, the host it was bound to, or (bound to every interface) this machine's name or
  one of its addresses: this defeats DNS rebinding;
* bound beyond loopback it also requires a token (``secrets.token_urlsafe``), printed once in
  the page's URL as Jupyter does; the first request carries it as ``?token=``, which sets an
  HttpOnly, SameSite=Strict cookie for the page's own requests (scripts may send an
  ``Authorization: token ...`` header instead); every request without it is refused;
* requests that change or export anything must be ``POST`` with a JSON body and, when a browser
  sends one, an ``Origin`` equal to the page's own (a cross-site form cannot send JSON without a
  CORS preflight, which this server never grants);
* a request body is capped at :data:`MAX_BODY_BYTES` while it is read (chunked bodies too), and
  a request's head and body must arrive within deadlines (:func:`make_server`);
* a dataset key from a request goes through :func:`atlas_assets.store.partition_paths`, which
  validates it; static files are served by Starlette's ``StaticFiles``, which refuses paths
  outside its folder;
* every error is a JSON ``{"error": message}`` with a 4xx status (a 500 says only "internal
  error"), never a traceback or a server path; the page's CSP allows no inline or foreign script.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from atlas_assets.explorer.state import PREVIEW_RESULTS, MapView, NotReadyError
from atlas_assets.explorer.validation import (
    check_flag,
    check_indices,
    check_int,
    parse_json_object,
    scrub_paths,
)
from atlas_assets.store import (
    ResourceNotReadyError,
    StaleResourceError,
    dataset_paths,
    partition_paths,
    published,
)
from atlas_assets.store import list_datasets as _list_datasets
from atlas_assets.store.layout import EXPLORER_PORT

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
MAX_BODY_BYTES = 16 * 1024 * 1024  # 1M row positions as JSON are ~8 MB
MAX_HEAD_BYTES = 16 * 1024  # request line and headers (h11's limit)
HEAD_TIMEOUT = 10.0  # seconds for a request's head, from connecting or the previous answer
BODY_TIMEOUT = 60.0  # seconds for a request's body, from its head (16 MB at 270 KB/s)
WRITE_TIMEOUT = 30.0  # seconds an answer may wait for a client that stopped reading it
KEEP_ALIVE_TIMEOUT = 5  # an idle connection is closed after this many seconds
MAX_CONNECTIONS = 64  # beyond this uvicorn answers 503
MAX_SEARCH_RESULTS = 200_000
MAX_OPEN_MAPS = 4
log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        # regl compiles its shaders' JavaScript with new Function: 'unsafe-eval' is needed,
        # inline and foreign scripts stay forbidden.
        b"default-src 'self'; script-src 'self' 'unsafe-eval'; worker-src 'self' blob:; "
        b"style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _error(status: int, message: str, *, close: bool = False) -> JSONResponse:
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": scrub_paths(message)}, status_code=status, headers=headers)


def _host_name(host_header: str) -> str:
    """``"[::1]:8000"`` -> ``"::1"``, ``"localhost:80"`` -> ``"localhost"``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=256)
def is_local_address(name: str) -> bool:
    """Whether ``name`` is an IP address of this machine (only those can be bound)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def token_cookie(token: str) -> str:
    """The cookie that carries ``token``: named after its hash, so two explorers on one host
    (cookies ignore ports) keep their own."""
    return "atlas-token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


class ClientDisconnected(Exception):
    """The client went away (or was cut off by a deadline) while its body was being read."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as more than ``limit`` bytes arrived."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class GuardMiddleware:
    """Host allow-list, token, same-origin JSON for state changes, a body size cap read as the
    body arrives, security headers."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: frozenset[str],
        local_addresses: bool = False,
        token: str | None = None,
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.local_addresses = local_addresses  # bound to every interface: any of its addresses
        self.token = token
        self.cookie = token_cookie(token) if token else None

    def _host_allowed(self, host: str) -> bool:
        name = _host_name(host).lower()
        return name in self.allowed_hosts or (self.local_addresses and is_local_address(name))

    def _given_token(self, request: Request) -> tuple[str | None, bool]:
        """The token the request carries, and whether it came in the URL."""
        if "token" in request.query_params:
            return request.query_params["token"], True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip(), False
        return request.cookies.get(self.cookie or ""), False

    def _refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if not self._host_allowed(host):
            return _error(
                421, f"host {host!r} is not served here; open the URL `atlas serve` printed"
            )
        if self.token is not None:
            given, _ = self._given_token(request)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return _error(
                    403,
                    "this explorer needs its token: open the URL with ?token=... that "
                    "`atlas serve` printed",
                )
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
                return _error(403, f"cross-origin request from {origin!r} refused")
        elif request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _error(403, "cross-site request refused")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(415, "send the request body as JSON (Content-Type: application/json)")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        extra = list(SECURITY_HEADERS)
        if refusal is None and self.token is not None and self._given_token(request)[1]:
            # The token came in the URL (and passed): keep it for the page's own requests.
            cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            extra.append((b"set-cookie", cookie.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        if refusal is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS"):  # its body is not read
                refusal.headers["connection"] = "close"
            await refusal(scope, receive, send_with_headers)
            return
        if request.method in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send_with_headers)
            return
        try:
            body = await read_body(receive, MAX_BODY_BYTES)
        except ClientDisconnected:
            return
        if body is None:
            refusal = _error(413, f"request body over {MAX_BODY_BYTES} bytes", close=True)
            await refusal(scope, receive, send_with_headers)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)


class MapViews:
    """One :class:`MapView` per dataset, rebuilt when another version of its map is published."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[tuple, MapView]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _signature(identifier: str) -> tuple:
        # A rebuild changes nothing readers see until it publishes a new manifest.
        paths = dataset_paths(identifier)
        meta = paths.meta.stat().st_mtime_ns if paths.meta.exists() else None
        return (meta, published(paths).stamp)

    def get(self, key: str) -> MapView:
        """The view of partition ``key`` (validated by the store before any file is touched)."""
        key = partition_paths(key).identifier
        signature = self._signature(key)
        with self._lock:
            cached = self._views.get(key)
            if cached is None or cached[0] != signature:
                self._views.pop(key, None)
                if len(self._views) >= MAX_OPEN_MAPS:  # a 1M-point map holds ~100 MB
                    self._views.pop(next(iter(self._views)))
                self._views[key] = (signature, MapView(key))
            return self._views[key][1]


def _frame(header: dict[str, Any], payload: bytes) -> Response:
    """Binary response: uint32 header length, JSON header, zero padding to 4 bytes, payload."""
    head = json.dumps(header).encode()
    pad = (-(4 + len(head))) % 4
    body = struct.pack("<I", len(head)) + head + b" " * pad + payload
    return Response(body, media_type="application/octet-stream")


Handler = Callable[[Request], Awaitable[Response]]


def _api(handler: Handler) -> Handler:
    """Turn the errors a request can cause into 4xx JSON answers, anything else into a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException:
            raise
        except (NotReadyError, ResourceNotReadyError, StaleResourceError) as err:
            return _error(409, str(err))
        except (KeyError, LookupError) as err:
            return _error(404, str(err.args[0]) if err.args else str(err))
        except ValueError as err:
            return _error(400, str(err))
        except (RecursionError, OverflowError):  # a value the checks did not foresee
            return _error(400, "a value in the request is nested too deeply or too large")
        except Exception:
            log.exception("explorer request %s failed", request.url.path)
            return _error(500, "internal error; see the server's log")

    return wrapped


async def _json_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())  # capped by GuardMiddleware


def create_app(
    default_dataset: str | None = None,
    *,
    allowed_hosts: Sequence[str] | None = None,
    local_addresses: bool = False,
    token: str | None = None,
) -> Starlette:
    """The explorer application.

    ``default_dataset`` is the map the page opens (it may open any dataset in the store by
    ``?dataset=``). ``allowed_hosts`` are the ``Host`` names answered besides loopback names;
    ``local_addresses`` also answers any IP address of this machine (for a server bound to every
    interface). With a ``token``, every request must carry it (see the module's docstring).
    """
    if default_dataset is not None:
        default_dataset = dataset_paths(default_dataset).partition_key
    hosts = set(LOOPBACK_HOSTS) | {h.lower() for h in allowed_hosts or ()}
    views = MapViews()

    async def view_of(request: Request) -> MapView:
        return await run_in_threadpool(views.get, request.path_params["dataset"])

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    @_api
    async def config(request: Request) -> Response:
        datasets = await run_in_threadpool(_list_datasets)
        return JSONResponse(
            {"default_dataset": default_dataset, "datasets": [p.partition_key for p in datasets]}
        )

    @_api
    async def meta(request: Request) -> Response:
        view = await view_of(request)
        return JSONResponse(await run_in_threadpool(view.meta))

    @_api
    async def points(request: Request) -> Response:
        view = await view_of(request)
        return _frame({"n": view.n}, view.x.tobytes() + view.y.tobytes())

    @_api
    async def colours(request: Request) -> Response:
        view = await view_of(request)
        by = request.query_params.get("by", "none")
        cats = await run_in_threadpool(view.categories, by)
        return _frame(cats.header(by), cats.codes.tobytes())

    @_api
    async def datum(request: Request) -> Response:
        view = await view_of(request)
        raw = request.path_params["index"]
        if not raw.isdigit():
            raise ValueError(f"a datum index must be a non-negative integer, got {raw!r}")
        return JSONResponse(await run_in_threadpool(view.datum, int(raw)))

    @_api
    async def search(request: Request) -> Response:
        view = await view_of(request)
        query = request.query_params.get("q", "")
        mode = request.query_params.get("mode", "keyword")
        distances = None
        if mode == "keyword":
            found = await run_in_threadpool(view.keyword_search, query)
        elif mode == "semantic":
            k = check_int(request.query_params.get("k"), "k", 50)
            found, distances = await run_in_threadpool(view.semantic_search, query, k)
        else:
            raise ValueError(f"mode must be 'keyword' or 'semantic', got {mode!r}")
        previews = await run_in_threadpool(view.previews, found[:PREVIEW_RESULTS], query)
        if distances is not None:
            for item, distance in zip(previews, distances, strict=False):
                item["distance"] = round(float(distance), 4)
        return JSONResponse(
            {
                "mode": mode,
                "total": int(len(found)),
                "indices": found[:MAX_SEARCH_RESULTS].tolist(),
                "results": previews,
            }
        )

    @_api
    async def select(request: Request) -> Response:
        view = await view_of(request)
        by, value = request.query_params.get("by"), request.query_params.get("value")
        if not by or value is None:
            raise ValueError("select needs by= (a colouring or 'tag') and value=")
        found = await run_in_threadpool(view.select, by, value)
        return JSONResponse({"by": by, "value": value, "indices": found.tolist()})

    @_api
    async def tags(request: Request) -> Response:
        view = await view_of(request)
        if request.method == "POST":
            body = await _json_body(request)
            indices = check_indices(body.get("indices"), view.n)
            remove = check_flag(body.get("remove", False), "remove")
            changed = await run_in_threadpool(
                lambda: view.tag(indices, body.get("tag"), remove=remove)
            )
            return JSONResponse({"changed": changed, "tags": await run_in_threadpool(view.tags)})
        return JSONResponse({"tags": await run_in_threadpool(view.tags)})

    @_api
    async def export(request: Request) -> Response:
        view = await view_of(request)
        body = await _json_body(request)
        indices = check_indices(body.get("indices"), view.n)
        if len(indices) == 0:
            raise ValueError("nothing selected to export")
        content, media, name = await run_in_threadpool(
            view.export, indices, body.get("format", "csv")
        )
        return Response(
            content,
            media_type=media,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail)

    prefix = "/api/maps/{dataset}"
    routes = [
        Route("/", index),
        Route("/api/config", config),
        Route(f"{prefix}/meta", meta),
        Route(f"{prefix}/points", points),
        Route(f"{prefix}/colours", colours),
        Route(prefix + "/datums/{index}", datum),
        Route(f"{prefix}/search", search),
        Route(f"{prefix}/select", select),
        Route(f"{prefix}/tags", tags, methods=["GET", "POST"]),
        Route(f"{prefix}/export", export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    guard = Middleware(
        GuardMiddleware,
        allowed_hosts=frozenset(hosts),
        local_addresses=local_addresses,
        token=token,
    )
    return Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers={HTTPException: not_found},
    )


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), ready for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines: a request's head must arrive within
    ``head_timeout`` seconds of the connection opening (or of the previous answer), its body
    within ``body_timeout`` of its head; otherwise the connection is closed. A client that stops
    reading an answer for ``write_timeout`` seconds is cut off. uvicorn alone times out only idle
    keep-alive connections: a client trickling one byte at a time (slowloris), or never reading,
    would hold a connection forever."""

    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    write_timeout = WRITE_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = "closed"
        self._cancel()
        if self._stalled is not None:
            self._stalled.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            # close() would wait for the unread answer to flush: only abort() frees it.
            self._stalled = self.loop.call_later(self.write_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _follow(self) -> None:
        """(Re)arm the deadline when the client moves between sending a head and a body."""
        if self._phase == "closed":
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            seconds = self.head_timeout if phase == "head" else self.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            # Gracefully: an answer still being sent is flushed first (or the stall deadline
            # aborts it). A body being read sees http.disconnect.
            self.transport.close()


def make_server(
    app: ASGIApp,
    *,
    head_timeout: float = HEAD_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
) -> uvicorn.Server:
    """The uvicorn server for the explorer: h11 with the deadlines of
    :class:`DeadlineH11Protocol`, a capped request head, short keep-alive, a connection cap."""
    protocol = type(
        "ExplorerH11Protocol",
        (DeadlineH11Protocol,),
        dict(head_timeout=head_timeout, body_timeout=body_timeout, write_timeout=write_timeout),
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        ws="none",
        lifespan="off",
        log_level="warning",
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
    )
    return uvicorn.Server(config)


def url_for(sock: socket.socket, dataset: str | None = None, token: str | None = None) -> str:
    """The page's URL for a socket from :func:`bind_socket` (with the token, if one is set)."""
    host, port = sock.getsockname()[:2]
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    params = {k: v for k, v in (("dataset", dataset), ("token", token)) if v}
    return f"http://{shown}:{port}/" + (f"?{urlencode(params)}" if params else "")


def serve(
    dataset: str,
    host: str = "127.0.0.1",
    port: int = EXPLORER_PORT,
    *,
    token: bool = False,
    allow_hosts: Iterable[str] = (),
) -> int:
    """Check that ``dataset`` has a map, print the page's URL, then serve until interrupted.

    Beyond loopback (or with ``token=True``) a fresh token is required and printed in the URL.
    ``allow_hosts`` are more ``Host`` names to answer (a DNS name the machine is reached by).
    """
    try:
        view = MapView(dataset)  # fail here, with the reason, rather than in the page
    except ResourceNotReadyError as err:
        raise RuntimeError(str(err)) from None
    wildcard = host in WILDCARD_HOSTS
    names = [*allow_hosts, *([socket.gethostname(), socket.getfqdn()] if wildcard else [host])]
    secret = secrets.token_urlsafe(32) if token or not is_loopback(host) else None
    app = create_app(
        view.paths.partition_key, allowed_hosts=names, local_addresses=wildcard, token=secret
    )
    try:
        sock = bind_socket(host, port)
    except RuntimeError:
        if port != EXPLORER_PORT:
            raise
        sock = bind_socket(host, 0)  # the default port is taken: any free one will do
    print(
        f"map of {view.paths.identifier} ({view.n} points): {url_for(sock, token=secret)}",
        flush=True,
    )
    if not is_loopback(host):
        print(
            f"listening on {host or '*'}: anyone who can reach it and has the URL's token can "
            "read, tag and export the data; from another machine, put this machine's address "
            "or name in place of 127.0.0.1",
            flush=True,
        )
    make_server(app).run(sockets=[sock])
    return 0


__all__ = ["MapViews", "bind_socket", "create_app", "make_server", "serve", "url_for"]
