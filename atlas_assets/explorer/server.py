"""The explorer's HTTP server: a static page plus a small JSON/binary API over :class:`MapView`.

Security, because the page shows other people's texts and can write tags:

* it binds 127.0.0.1 unless told otherwise, and answers only requests whose ``Host`` is a
  loopback name (or the host it was bound to), which defeats DNS rebinding;
* requests that change or export anything must be ``POST`` with a JSON body and, when a browser
  sends one, an ``Origin`` equal to the page's own (a cross-site form cannot send JSON without a
  CORS preflight, which this server never grants);
* a dataset key from a request goes through :func:`atlas_assets.store.partition_paths`, which
  validates it; static files are served by Starlette's ``StaticFiles``, which refuses paths
  outside its folder;
* every error is a JSON ``{"error": message}`` with a 4xx status (a 500 says only "internal
  error"), never a traceback; the page's CSP allows no inline or foreign script.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atlas_assets.explorer.state import PREVIEW_RESULTS, MapView, NotReadyError, check_indices
from atlas_assets.store import (
    ResourceNotReadyError,
    StaleResourceError,
    dataset_paths,
    partition_paths,
)
from atlas_assets.store import list_datasets as _list_datasets
from atlas_assets.store.layout import EXPLORER_PORT

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 64 * 1024 * 1024  # 1M indices as JSON is ~8 MB
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _host_name(host_header: str) -> str:
    """``"[::1]:8000"`` -> ``"::1"``, ``"localhost:80"`` -> ``"localhost"``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class GuardMiddleware:
    """Host allow-list, same-origin JSON for state changes, a body size cap, security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: any host (bound to a wildcard address)

    def _refusal(self, scope: Scope) -> Response | None:
        request = Request(scope)
        host = request.headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host).lower() not in self.allowed_hosts:
            return _error(
                421, f"host {host!r} is not served here; open the URL `atlas serve` printed"
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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class MapViews:
    """One :class:`MapView` per dataset, rebuilt when the map's files change."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[tuple, MapView]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _signature(identifier: str) -> tuple:
        paths = dataset_paths(identifier)
        files = [paths.meta] + [
            paths.resource(r) for r in ("dataset", "projected", "topics", "metadata", "duplicates")
        ]
        return tuple(f.stat().st_mtime_ns if f.exists() else None for f in files)

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


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


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
            return _error(404, err.args[0] if err.args else str(err))
        except ValueError as err:
            return _error(400, str(err))
        except Exception:
            log.exception("explorer request %s failed", request.url.path)
            return _error(500, "internal error; see the server's log")

    return wrapped


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def create_app(
    default_dataset: str | None = None,
    *,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The explorer application.

    ``default_dataset`` is the map the page opens (it may open any dataset in the store by
    ``?dataset=``). ``allowed_hosts`` are the ``Host`` names answered, loopback names by
    default; pass ``["*"]`` to answer any (only sensible when deliberately bound to a network).
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
            k = _int_param(request, "k", 50)
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
            remove = body.get("remove", False)
            if not isinstance(remove, bool):
                raise ValueError("remove must be true or false")
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
    allow = None if "*" in hosts else frozenset(hosts)
    return Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, allowed_hosts=allow)],
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


def url_for(sock: socket.socket, dataset: str | None = None) -> str:
    """The page's URL for a socket from :func:`bind_socket`."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    query = f"?dataset={dataset}" if dataset else ""
    return f"http://{shown}:{port}/{query}"


def serve(dataset: str, host: str = "127.0.0.1", port: int = EXPLORER_PORT) -> int:
    """Check that ``dataset`` has a map, print the page's URL, then serve until interrupted."""
    import uvicorn

    try:
        view = MapView(dataset)  # fail here, with the reason, rather than in the page
    except ResourceNotReadyError as err:
        raise RuntimeError(str(err)) from None
    extra = ["*"] if host in ("0.0.0.0", "::") else [host]
    app = create_app(view.paths.identifier, allowed_hosts=extra)
    try:
        sock = bind_socket(host, port)
    except RuntimeError:
        if port != EXPLORER_PORT:
            raise
        sock = bind_socket(host, 0)  # the default port is taken: any free one will do
    print(f"map of {view.paths.identifier} ({view.n} points): {url_for(sock)}", flush=True)
    if host not in LOOPBACK_HOSTS:
        print(f"warning: listening on {host}: anyone who can reach it can read and tag the data")
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


__all__ = ["MapViews", "bind_socket", "create_app", "serve", "url_for"]
