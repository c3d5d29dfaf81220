"""The local web server: Starlette routes served by uvicorn in a background thread.

Routes: ``GET /`` (the page), ``GET /static/{app.js, style.css}`` (its two files, from a fixed
list: nothing else on disk is reachable), ``GET /api/init``, ``POST /api/fetch``,
``POST /api/attribute``, ``POST /api/compare``. Anything else is a 404. Bad requests are 400
and errors raised by the user's model or data 500, both as ``{"error": message}``; the server
keeps serving. POST bodies must be JSON (``Content-Type: application/json``), which a page from
another origin cannot send without a CORS preflight this server never grants, and the ``Host``
header must name this server (no DNS rebinding) unless it was bound to a public address.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from importlib import resources
from typing import Sequence

from ._data import UserCodeError
from ._methods import BadRequest

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "serving the explorer needs the 'insights' extra: pip install 'funcattr[insights]' "
        f"(missing: {err.name})"
    ) from None

__all__ = ["Server", "make_app"]

log = logging.getLogger("funcattr.insights")

STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _static(name: str) -> bytes:
    return resources.files("funcattr.insights").joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def make_app(explorer, allowed_hosts: Sequence[str] = ("*",)):
    """The ASGI app for ``explorer`` (the files are read once, here)."""
    page = _static("index.html")
    files = {name: (_static(name), media) for name, media in STATIC.items()}
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={**headers, "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                 "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors *"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return _error(404, f"not found: {request.url.path}")
        body, media = files[name]
        return Response(body, media_type=media, headers=headers)

    def api(handler):
        async def endpoint(request: Request) -> Response:
            if request.method == "POST":
                if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                    return _error(415, "POST bodies must be JSON (Content-Type: application/json)")
                body = b""
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY:
                        return _error(413, f"the request body is larger than {MAX_BODY // 1024} KiB")
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    return _error(400, "the request body is not valid JSON")
                args = (payload,)
            else:
                args = ()
            try:
                result = await run_in_threadpool(handler, *args)
            except BadRequest as err:
                return _error(400, str(err))
            except UserCodeError as err:
                log.warning("funcattr insights: %s", err)
                return _error(500, str(err))
            except Exception as err:  # a bug of ours or the user's: report it, keep serving
                log.exception("funcattr insights: request failed")
                return _error(500, f"{type(err).__name__}: {err}")
            return JSONResponse(result, headers={"Cache-Control": "no-store"})

        return endpoint

    async def not_found(request: Request, exc) -> Response:
        return _error(404, f"not found: {request.url.path}")

    async def not_allowed(request: Request, exc) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/init", api(explorer.init), methods=["GET"]),
        Route("/api/fetch", api(explorer.fetch), methods=["POST"]),
        Route("/api/attribute", api(explorer.attribute), methods=["POST"]),
        Route("/api/compare", api(explorer.compare), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    return app if "*" in allowed_hosts else _host_check(app, {h.lower() for h in allowed_hosts})


def _host_name(header: str) -> str:
    """``Host`` header → the name without the port (``[::1]:8000`` → ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _host_check(app, allowed: set):
    """Refuse (400) requests whose ``Host`` is not this server's name: a page from another site
    cannot reach it through DNS rebinding."""

    async def checked(scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if _host_name(host) not in allowed:
                await _error(400, f"invalid Host header {host!r}")(scope, receive, send)
                return
        await app(scope, receive, send)

    return checked


class Server:
    """uvicorn on a socket bound here (so ``port=0`` is known at once), in a daemon thread."""

    def __init__(self, explorer, host: str, port: int, allowed_hosts: Sequence[str] | None = None):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            raise OSError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.host = host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{self.port}/"
        hosts = list(allowed_hosts or ())
        hosts = ["*"] if host not in LOOPBACK else [*LOOPBACK, *hosts]
        config = uvicorn.Config(make_app(explorer, hosts), log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none", timeout_graceful_shutdown=2)
        self._sock = sock
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]},
                                        name=f"funcattr-insights:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the explorer's server did not start on {host}:{self.port}")
            time.sleep(0.01)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
