"""The one small HTTP server behind facelab's pages in the browser: the XSeg editor, the interactive merger
and the training view.

There is no screen toolkit in facelab's dependencies (OpenCV is the headless build), and a browser is on
every desktop, also on the other end of an SSH tunnel to a GPU box. So each interactive tool is one page
of plain HTML and JavaScript served by the standard library's threading server, and everything here is
what those pages share: who may talk to them, how requests are read and answered, how the server starts.

A page is reachable from this machine only. It listens on a loopback address, and because any web page
the user opens could make the browser send requests to it (DNS rebinding: a page's own name resolving to
127.0.0.1), it answers only requests whose Host names a loopback address and whose Origin, if any, is a
page on a loopback address; everything else gets 403. Idle connections are closed after
``IDLE_TIMEOUT_S``, so stalled clients cannot pile up threads; every malformed request is answered
with a 4xx.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from facelab.core.errors import FacelabError

log = logging.getLogger("facelab")
MAX_BODY = 4 << 20  # what a page sends (a label, a frame's settings) is a few KB; refuse anything absurd
IDLE_TIMEOUT_S = 10.0  # a browser sends its request at once; a connection silent this long is dropped
PNG = "image/png"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or address, without port) is this machine's loopback."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(netloc: str) -> str | None:
    """The host part of a ``Host`` header or URL netloc (``127.0.0.1:8765``, ``[::1]:80``, ``localhost``)."""
    try:
        return urlsplit("//" + netloc).hostname
    except ValueError:
        return None


class PageHandler(BaseHTTPRequestHandler):
    """One request to a local page. The page itself (``GET /``) and the refusals are handled here; a
    subclass lists the ``METHODS`` it answers and implements :meth:`route`, reading :attr:`url_path` and
    :attr:`query` and replying with :meth:`reply_json` or :meth:`send`. ``self.server.app`` is the tool's
    state (a faceset, a merge session, a model folder)."""

    METHODS: tuple[str, ...] = ("GET",)
    server: "LocalServer"

    @property
    def timeout(self) -> float:  # socket timeout for every read: idle and stalled clients are dropped
        return self.server.idle_timeout

    def log_message(self, fmt, *args):  # requests go to the debug log, not over the terminal
        log.debug(f"{self.server.what}: " + fmt, *args)

    def __getattr__(self, name: str):
        """``do_GET`` and the other methods all go through :meth:`_dispatch`; a method the page does not
        use is 405, a client error, not http.server's 501."""
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _refused(self) -> bool:
        """Answer 403 to a request not meant for this machine's page (see the module doc)."""
        origin = self.headers.get("Origin")
        if not is_loopback(_host_of(self.headers.get("Host", ""))):
            reason = f"the {self.server.what} answers only requests for 127.0.0.1 or localhost"
        elif origin is not None and not (origin.startswith("http://") and is_loopback(_host_of(origin[7:]))):
            reason = "requests from other web pages are refused"
        else:
            return False
        self.close_connection = True
        self.reply_json(HTTPStatus.FORBIDDEN, {"error": reason})
        return True

    def _dispatch(self) -> None:
        if self._refused():
            return
        if self.command not in self.METHODS:
            self.reply_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not used here"})
            return
        parts = urlsplit(self.path)
        self.url_path, self.query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if self.command == "GET" and self.url_path in ("/", "/index.html"):
            self.send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif self.command == "GET" and self.url_path == "/favicon.ico":
            self.send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self.route()

    def route(self) -> None:
        """Answer :attr:`command` on :attr:`url_path`; the subclass's API."""
        self.not_found()

    def not_found(self, what: str | None = None) -> None:
        self.reply_json(HTTPStatus.NOT_FOUND, {"error": what or f"no such address {self.url_path}"})

    def body(self) -> bytes | None:
        """The request body, or None after answering 400/413 for a missing, bad or huge length."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length > MAX_BODY:
            self.reply_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a request body is at most {MAX_BODY} bytes"})
        elif length <= 0:
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"{self.command} a JSON body with a Content-Length"})
        else:
            return self.rfile.read(length)
        self.close_connection = True
        return None

    def json_body(self) -> tuple[bool, Any]:
        """(True, the parsed JSON body), or (False, None) after answering 400 / 413."""
        raw = self.body()
        if raw is None:
            return False, None
        try:
            return True, json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"the body is not valid JSON ({exc})"[:300]})
            return False, None

    def send(self, status: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page moved on (a newer image replaced this one)
            self.close_connection = True

    def reply_json(self, status: int, obj) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")


class LocalServer(ThreadingHTTPServer):
    """A threading HTTP server that carries its tool's state (``app``) and page to every request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[PageHandler], app: Any, page: bytes, what: str):
        self.app, self.page, self.what, self.idle_timeout = app, page, what, IDLE_TIMEOUT_S
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_local_server(handler: type[PageHandler], app: Any, page: bytes, what: str, host: str = "127.0.0.1",
                      port: int = 0) -> LocalServer:
    """The ``what`` page's server on ``host:port`` (port 0: any free one); call serve_forever() or :func:`serve`."""
    if not is_loopback(host):
        raise FacelabError(f"--host {host} is not this machine: the {what} listens on 127.0.0.1 or localhost only; "
                           f"from another machine use an SSH tunnel (ssh -L {port or 8765}:127.0.0.1:{port or 8765} THIS_HOST)")
    if not 0 <= port <= 65535:
        raise FacelabError(f"--port {port} is out of range; use 0..65535 (0 = any free port)")
    try:
        return LocalServer((host, port), handler, app, page, what)
    except OSError as exc:
        raise FacelabError(f"cannot serve the {what} on {host}:{port} ({exc.strerror}); choose another --port") from None


def serve(server: LocalServer, note: str, open_browser: bool = True) -> None:
    """Serve until Ctrl-C (which ends the command with exit 130, as everywhere), after printing where
    (and ``note``: what is kept, how to stop)."""
    print(f"{server.what} at {server.url} ({note})", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
