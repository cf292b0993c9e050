"""The local preview page: anonymized live view, counts, health, and the counting line editor.

Served by the standard library's :class:`~http.server.ThreadingHTTPServer` in a background
thread; no framework, no build step, no external resource. Routes:

=====================  ===================================================================
``GET /``              the page (``static/index.html``; CSS and JS next to it)
``GET /stream.mjpg``   the anonymized live view as MJPEG (``multipart/x-mixed-replace``)
``GET /api/state``     counts, health, stream figures, the counter line/inside/zones (0..1)
``POST /api/counter``  ``{"line": [x1, y1, x2, y2], "inside": [x, y]}``: validated, saved to
                       the config file, applied without a restart
=====================  ===================================================================

Access rule: a bind address other than ``127.0.0.1``, ``::1`` or ``localhost`` is "beyond
loopback" (including other 127.x addresses, which some systems route or forward) and then a
token is required: ``preview.token_file`` must name a readable file holding it, or the server
refuses to start. When a token is configured, every request must carry it, as ``?token=`` (the
page's first load; an ``<img>`` cannot set headers), ``Authorization: Bearer``, or the HttpOnly
``SameSite=Strict`` cookie set by the first valid page load; otherwise 401. On loopback without
a token, requests must name a loopback ``Host`` (against DNS rebinding from a web page).

Only anonymized images reach this server: the hub accepts nothing but the anonymizing stage's
results, and this module serves no other image.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import re
import socket
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from firmware.config.edit import save_counter, validate_counter
from firmware.config.settings import PreviewConfig
from firmware.errors import ConfigError, OutputError
from firmware.preview.hub import PreviewHub

logger = logging.getLogger(__name__)

LOOPBACK_BINDS = frozenset({"127.0.0.1", "::1", "localhost"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
COOKIE = "anoncam_preview"
BOUNDARY = "anoncamframe"
MAX_BODY = 4096
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
_TOKEN_HINT = (
    "write a random token into the file, e.g. "
    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE; chmod 600 FILE"
)

CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/preview.css": ("preview.css", "text/css; charset=utf-8"),
    "/preview.js": ("preview.js", "text/javascript; charset=utf-8"),
}


def requires_token(bind: str) -> bool:
    """True when ``bind`` is beyond loopback (see the module docstring for the rule)."""
    return bind.strip().lower() not in LOOPBACK_BINDS


def read_token(config: PreviewConfig) -> str | None:
    """The access token from ``config.token_file``; ConfigError if it is needed and unusable."""
    path = config.token_file
    if path is None:
        if requires_token(config.bind):
            raise ConfigError(
                f"preview.bind = {config.bind!r} is beyond loopback but no access token is "
                "configured",
                problems=[
                    (
                        "preview.token_file",
                        "required when preview.bind is not 127.0.0.1, ::1 or localhost",
                    )
                ],
                hint=f"set preview.token_file to a file holding the token ({_TOKEN_HINT}), "
                "or bind to 127.0.0.1 and use an SSH tunnel",
            )
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"preview.token_file: {path} not found",
            problems=[("preview.token_file", f"{path}: no such file")],
            hint=_TOKEN_HINT,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"preview.token_file: cannot read {path}: {exc}",
            problems=[("preview.token_file", "unreadable")],
            hint="make the file readable by the service user",
        ) from None
    if not _TOKEN_RE.match(token):
        raise ConfigError(
            f"preview.token_file: the token in {path} is too short or has unsafe characters",
            problems=[("preview.token_file", "need 16-256 characters from A-Z a-z 0-9 . _ ~ -")],
            hint=_TOKEN_HINT,
        )
    if path.stat().st_mode & 0o077:
        logger.warning("preview token file %s is readable by other users; chmod 600 it", path)
    return token


def _jsonable(value: Any) -> Any:
    """Health figures may hold NaN or odd types; JSON for a browser must not."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _load_static() -> dict[str, tuple[bytes, str]]:
    base = resources.files("firmware.preview").joinpath("static")
    return {
        route: (base.joinpath(name).read_bytes(), ctype) for route, (name, ctype) in _STATIC.items()
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # stop() joins request threads after closing their sockets
    app: PreviewServer

    def __init__(self, address: tuple[str, int], family: int, app: PreviewServer) -> None:
        self.address_family = family
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


class PreviewServer:
    """Serves the preview page for ``hub``; saves line changes to ``config_path`` if given."""

    def __init__(
        self,
        config: PreviewConfig,
        hub: PreviewHub,
        config_path: Path | None = None,
        *,
        max_viewers: int = 4,
    ) -> None:
        self.config = config
        self.hub = hub
        self.config_path = config_path
        self.max_viewers = max_viewers
        self.token: str | None = None
        self.static: dict[str, tuple[bytes, str]] = {}
        self.stopping = threading.Event()
        self.save_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("PreviewServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.bind
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Read the token, bind and serve in a background thread. ConfigError if misconfigured."""
        if self._httpd is not None:
            return
        self.token = read_token(self.config)
        self.static = _load_static()
        try:
            infos = socket.getaddrinfo(
                self.config.bind, self.config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, address = infos[0]
            self._httpd = _HTTPServer((str(address[0]), int(address[1])), family, self)
        except OSError as exc:
            raise ConfigError(
                f"preview: cannot listen on {self.config.bind}:{self.config.port}: "
                f"{exc.strerror or exc}",
                problems=[("preview.bind", "address not available or port in use")],
                hint="choose a free preview.port, or a preview.bind address this device has",
            ) from None
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="preview-server",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "preview page on %s (%s)",
            self.url,
            "token required" if self.token else "loopback only, no token",
        )

    def stop(self) -> None:
        """Stop serving, end every open stream and connection, and release the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("preview page stopped")

    def __enter__(self) -> PreviewServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "anoncam-preview"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection or a stuck viewer frees its thread

    # --- plumbing ------------------------------------------------------------------------
    @property
    def app(self) -> PreviewServer:
        return self.server.app

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Never the query string: it may carry the token.
        logger.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_error(self, format: str, *args: Any) -> None:
        message = format % args  # may quote the raw request line, token included
        if self.app.token:
            message = message.replace(self.app.token, "<token>")
        logger.debug("preview request error: %s", message)

    def _headers(
        self, status: int, ctype: str, length: int | None, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(
        self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(_jsonable(payload), separators=(",", ":")).encode()
        self._send(status, body, "application/json", extra)

    def _error(self, status: int, message: str, hint: str = "", **more: Any) -> None:
        self._json(status, {"error": message, "hint": hint, **more})

    # --- access --------------------------------------------------------------------------
    def _presented_tokens(self, query: dict[str, list[str]]) -> list[tuple[str, str]]:
        found = [("query", t) for t in query.get("token", [])]
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            found.append(("header", auth[7:].strip()))
        raw = self.headers.get("Cookie")
        if raw:
            try:
                jar = SimpleCookie(raw)
            except CookieError:
                jar = SimpleCookie()
            if COOKIE in jar:
                found.append(("cookie", jar[COOKIE].value))
        return found

    def _authorize(self, query: dict[str, list[str]]) -> str | None:
        """How the request proved access ("query", "header", "cookie", "loopback") or None."""
        token = self.app.token
        if token is None:
            host = self.headers.get("Host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            name = name.strip("[]").lower()
            return "loopback" if name in _LOOPBACK_HOSTS else None
        expected = token.encode()
        for how, value in self._presented_tokens(query):
            if hmac.compare_digest(value.encode(), expected):
                return how
        return None

    def _refuse(self) -> None:
        if self.app.token is None:
            self._send(
                HTTPStatus.FORBIDDEN,
                b"unexpected Host header; open the preview as "
                b"http://127.0.0.1:PORT/ or through an SSH tunnel\n",
                "text/plain; charset=utf-8",
            )
            return
        body = (
            b"401 - this preview needs its access token.\n"
            b"Open http://ADDRESS:PORT/?token=TOKEN once; the token is in the file named by "
            b"preview.token_file on the device.\n"
        )
        self._send(
            HTTPStatus.UNAUTHORIZED,
            body,
            "text/plain; charset=utf-8",
            {"WWW-Authenticate": 'Bearer realm="anoncam preview"'},
        )

    # --- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        how = self._authorize(query)
        if how is None:
            self._refuse()
            return
        if url.path == "/" and how == "query":
            # Trade the token in the address bar for a cookie, and drop it from the URL so it
            # is not left in the history or shown over the installer's shoulder.
            cookie = f"{COOKIE}={self.app.token}; HttpOnly; SameSite=Strict; Path=/"
            self._send(
                HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie}
            )
            return
        if url.path in self.app.static:
            body, ctype = self.app.static[url.path]
            self._send(HTTPStatus.OK, body, ctype)
        elif url.path == "/stream.mjpg":
            self._stream()
        elif url.path == "/api/state":
            state = self.app.hub.state()
            state["config_writable"] = self.app.config_path is not None
            state["token_required"] = self.app.token is not None
            self._json(HTTPStatus.OK, state)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self) -> None:
        # Early refusals leave the body unread; closing keeps it from being parsed as a request.
        self.close_connection = True
        url = urlsplit(self.path)
        if self._authorize(parse_qs(url.query)) is None:
            self._refuse()
            return
        if url.path != "/api/counter":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host", ""):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the update as application/json")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY} bytes")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "body is not valid JSON")
            return
        except RecursionError:
            # a few KB of '[' nest deeper than the parser recurses; no valid update nests
            self._error(HTTPStatus.BAD_REQUEST, "body is nested too deeply")
            return
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "expected a JSON object with 'line' and 'inside'")
            return
        self._save_counter(body)

    def _config_error(self, exc: ConfigError) -> None:
        problems = [{"path": p, "message": m} for p, m in exc.problems]
        self._error(
            HTTPStatus.BAD_REQUEST, exc.message.splitlines()[0], exc.hint, problems=problems
        )

    def _save_counter(self, body: dict[str, Any]) -> None:
        app = self.app
        try:
            validate_counter(app.hub.counter, body)
        except ConfigError as exc:
            self._config_error(exc)
            return
        if app.config_path is None:
            self._error(
                HTTPStatus.CONFLICT,
                "this preview runs without a config file, so a new line could not be saved and "
                "would be lost at the next restart; nothing was changed",
                "start the service with --config FILE, or set counter.line and counter.inside "
                "in the config by hand",
            )
            return
        with app.save_lock:
            try:
                config = save_counter(app.config_path, body)
            except ConfigError as exc:
                self._config_error(exc)
                return
            except OutputError as exc:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, exc.message, exc.hint)
                return
            try:
                app.hub.apply_counter(config.counter)
            except Exception as exc:  # the service's callback: report any failure to the installer
                logger.error("counter saved to %s but not applied: %s", app.config_path, exc)
                self._error(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"saved to {app.config_path} but not applied: {exc}",
                    "restart the service to use the saved line",
                )
                return
        self._json(
            HTTPStatus.OK,
            {"ok": True, "saved_to": str(app.config_path), "counter": app.hub.state()["counter"]},
        )

    def _stream(self) -> None:
        app, hub = self.app, self.app.hub
        if not hub.viewer_joined(app.max_viewers):
            self._error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"at most {app.max_viewers} viewers at a time",
                "close the preview in another browser tab or device",
            )
            return
        self.close_connection = True
        try:
            self._headers(
                HTTPStatus.OK,
                f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                None,
                {"Connection": "close", "Pragma": "no-cache"},
            )
            interval = 1.0 / hub.max_fps
            seq = 0
            while not app.stopping.is_set():
                got = hub.wait_jpeg(seq, timeout=0.5)
                if got is None:
                    if hub.closed:
                        break
                    continue
                seq, data = got
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                self.wfile.write(head.encode() + data + b"\r\n")
                hub.count_sent()
                if app.stopping.wait(interval):  # caps each viewer's rate, wakes at once on stop
                    break
        except OSError:  # the viewer closed the page or stopped reading (timeout)
            logger.debug("preview viewer left")
        finally:
            hub.viewer_left()
