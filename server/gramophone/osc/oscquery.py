"""OSCQuery on the HTTP port: the namespace over HTTP, LISTEN and OSC over a WebSocket, the control page.

One aiohttp server on one port, on its own thread and event loop: ``GET /`` (and any address)
answers the namespace tree or one attribute (``?VALUE``), ``GET /?HOST_INFO`` the host's
description, ``/ui`` the control page; a WebSocket opened on any path takes JSON
``{"COMMAND": "LISTEN" | "IGNORE", "DATA": path}`` text frames and OSC packets as binary frames.
Those packets are served exactly as a TCP connection's (the same peers, sessions and replies);
a listened value comes as a binary OSC frame whenever anyone sets it, a learned or deleted style
as ``PATH_ADDED`` / ``PATH_REMOVED``.  Nothing here reads or writes a file after start-up (the
page is read into memory once).  Torch-free, like the rest of the protocol layer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from .namespace import ATTRIBUTES, STYLE_NAMES, build_tree, find
from .protocol import PARAM_PREFIX, encode_message

log = logging.getLogger("gramophone.server")
MAX_FRAME = 8 * 1024 * 1024  # as a TCP packet
QUEUE_FRAMES = 4096  # a WebSocket client that stops reading is closed, as a TCP one
CLOSE_SECONDS = 2.0
EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "UNIT": True, "CLIPMODE": True,
    "LISTEN": True, "PATH_ADDED": True, "PATH_REMOVED": True, "PATH_CHANGED": True, "OSC_STREAMING": True,
    "TAGS": False, "CRITICAL": False, "EXTENDED_TYPE": False, "OVERLOADS": False, "HTML": False, "PATH_RENAMED": False,
}
UI_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_ids = itertools.count(1)


class WsConnection:
    """One WebSocket client, shaped like a ``TcpConnection`` for the server: OSC replies as binary frames."""

    def __init__(self, ws: web.WebSocketResponse, loop: asyncio.AbstractEventLoop, addr: tuple) -> None:
        self.id = f"ws{next(_ids)}"  # a string: never equal to a TCP connection's number
        self.addr = addr
        self.label = f"ws {addr[0]}:{addr[1]}"
        self.listening: set[str] = set()
        self._ws, self._loop = ws, loop
        self._out: asyncio.Queue[bytes | str | None] = asyncio.Queue(QUEUE_FRAMES + 1)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, packet: bytes) -> None:
        """Queue an OSC packet from any thread."""
        if not self._closed:
            try:
                self._loop.call_soon_threadsafe(self.queue, packet)
            except RuntimeError:  # the loop has stopped: the connection is gone
                pass

    def queue(self, frame: bytes | str) -> None:
        """Queue a frame (bytes: OSC, str: JSON) on the loop's thread; a full queue closes the connection."""
        if self._closed:
            return
        if self._out.qsize() >= QUEUE_FRAMES:
            log.warning("%s is not reading its frames (%d queued); closing it", self.label, QUEUE_FRAMES)
            self.finish()
            return
        self._out.put_nowait(frame)

    def finish(self) -> None:
        """Stop taking frames; the writer sends what is queued, then ends."""
        if not self._closed:
            self._closed = True
            self._out.put_nowait(None)

    async def write(self) -> None:
        while (frame := await self._out.get()) is not None:
            try:
                if isinstance(frame, bytes):
                    await self._ws.send_bytes(frame)
                else:
                    await self._ws.send_str(frame)
            except (ConnectionError, RuntimeError):  # closed under us
                break
        self._closed = True
        await self._ws.close()


def bind_http(host: str, port: int) -> socket.socket:
    """A socket bound to the OSCQuery port; a port it cannot have is a one-line ``OSError``."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"--http-port {port}: cannot listen on {host}:{port} ({error.strerror})") from None
    return sock


class OscQuery:
    """The HTTP port of a running ``Server``: ``start``, ``stop_receiving``, then ``close``."""

    def __init__(self, server: Any, host: str, port: int, name: str) -> None:
        self.server, self.name = server, name
        self.params, self.library = server.params, server.library
        self._allow = server.config.allow
        self._open, self._packet, self._close = server.connection_handlers()
        self._sock = bind_http(host, port)
        self.port = self._sock.getsockname()[1]
        self._hosts = _own_names(self._sock.getsockname()[0])
        self._page = _read_page()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="oscquery", daemon=True)
        self._connections: set[WsConnection] = set()
        self._receiving = True
        self._styles = set(self.library.names())
        self._active = self.library.active_name
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/{tail:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_SECONDS)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(30)
        self.params.subscribe(self._on_param)
        self.library.subscribe(self._on_styles)

    async def _serve(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, shutdown_timeout=CLOSE_SECONDS).start()

    def stop_receiving(self) -> None:
        """Take no more OSC from WebSockets (the server is finishing); listeners still hear changes."""
        self._receiving = False

    def close(self) -> None:
        """Send what is queued, close every WebSocket and the port, stop the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        for conn in list(self._connections):
            conn.finish()
        await self._runner.cleanup()

    # -- notifications (from any thread) -------------------------------------------------

    def _on_param(self, name: str, value: float) -> None:
        address = PARAM_PREFIX + name
        self._call(self._publish, address, encode_message(address, value))

    def _on_styles(self) -> None:
        self._call(self._styles_changed)

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # closed at shutdown; nobody is listening any more
            pass

    def _publish(self, address: str, packet: bytes) -> None:
        for conn in self._connections:
            if address in conn.listening:
                conn.queue(packet)

    def _styles_changed(self) -> None:
        names, active = set(self.library.names()), self.library.active_name
        changes = [("PATH_ADDED", f"{STYLE_NAMES}/{name}") for name in sorted(names - self._styles)]
        changes += [("PATH_REMOVED", f"{STYLE_NAMES}/{name}") for name in sorted(self._styles - names)]
        if changes:  # the style arguments' RANGE changed with them
            changes += [("PATH_CHANGED", "/style/select"), ("PATH_CHANGED", "/style/delete")]
        self._styles = names
        for command, path in changes:
            frame = json.dumps({"COMMAND": command, "DATA": path})
            for conn in self._connections:
                conn.queue(frame)
        if active != self._active:
            self._active = active
            self._publish("/style/select", encode_message("/style/select", active or ""))

    # -- HTTP ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        """``--allow`` as on the OSC port, and a Host header that names this machine (no DNS rebinding)."""
        if not _allowed(request.remote or "", self._allow):
            log.warning("refused http from %s: not in --allow", request.remote)
            return _error(403, f"{request.remote} is not in --allow")
        if urlsplit(f"//{request.host}").hostname not in self._hosts:
            return _error(403, f"Host {request.host!r} does not name this server; use its address")
        return await handler(request)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        path, query = request.path, request.query_string
        if path == "/ui" or path.startswith("/ui/"):
            return self._ui(path)
        if query == "HOST_INFO":
            return web.json_response(self.host_info())
        node = find(self.tree(), path)
        if node is None:
            return _error(404, f"no OSC address {path} (GET / lists them)")
        if not query:
            return web.json_response(node)
        if query not in ATTRIBUTES:
            return _error(400, f"unknown attribute {query!r}; known: HOST_INFO, {', '.join(ATTRIBUTES)}")
        if query not in node:
            return web.Response(status=204)
        return web.json_response({query: node[query]})

    def tree(self) -> dict[str, Any]:
        return build_tree(self.params.snapshot(), self.library.names(), self.library.active_name)

    def host_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"NAME": self.name, "OSC_PORT": self.server.port, "OSC_TRANSPORT": "UDP",
                                "EXTENSIONS": EXTENSIONS}
        if not ipaddress.ip_address(self._sock.getsockname()[0]).is_unspecified:
            info["OSC_IP"] = self._sock.getsockname()[0]
        return info

    def _ui(self, path: str) -> web.Response:
        name = path[len("/ui/"):] or "index.html"
        if name not in self._page:
            return _error(404, f"no file {name!r} in the control page")
        body, content_type = self._page[name]
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    # -- WebSocket ----------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return _error(403, f"WebSocket from another site ({origin}) refused")
        if not self._receiving:
            return _error(503, "the server is shutting down")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        conn = WsConnection(ws, self._loop, tuple(peer or (request.remote, 0)))
        if not self._open(conn):
            await ws.close()
            return ws
        self._connections.add(conn)
        writer = asyncio.create_task(conn.write())
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._command(conn, message.data)
                elif message.type == WSMsgType.BINARY and self._receiving:
                    # on a thread, in order: a render session's full queue may hold it, as it holds a TCP reader
                    await asyncio.to_thread(self._osc, conn, message.data, time.monotonic())
        finally:
            self._connections.discard(conn)
            conn.finish()
            await asyncio.wait([writer], timeout=CLOSE_SECONDS)
            await asyncio.to_thread(self._close, conn)
        return ws

    def _osc(self, conn: WsConnection, data: bytes, arrival: float) -> None:
        try:
            self._packet(conn, data, arrival)
        except Exception as error:  # a bug must never end the connection or the loop
            log.error("internal error on a packet from %s: %r", conn.label, error)

    def _command(self, conn: WsConnection, text: str) -> None:
        """LISTEN or IGNORE a path; anything else is ignored (with a debug line), as the proposal says."""
        try:
            message = json.loads(text)
            command, path = message["COMMAND"], message["DATA"]
        except (ValueError, TypeError, KeyError):
            log.debug("%s: ignored a text frame that is not an OSCQuery command: %.80r", conn.label, text)
            return
        if command not in ("LISTEN", "IGNORE") or not isinstance(path, str) or find(self.tree(), path) is None:
            log.debug("%s: ignored %.80r", conn.label, text)
        elif command == "LISTEN":
            conn.listening.add(path)
        else:
            conn.listening.discard(path)


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _allowed(host: str, allow: tuple) -> bool:
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in allow)


def _own_names(bound: str) -> set[str]:
    """Host names a request to this port may carry: this machine's addresses and names, and localhost."""
    import ifaddr  # zeroconf's own dependency

    hostname = socket.gethostname()
    addresses = {ip.ip if isinstance(ip.ip, str) else ip.ip[0] for adapter in ifaddr.get_adapters() for ip in adapter.ips}
    return {"localhost", hostname, f"{hostname}.local", bound, "127.0.0.1", "::1"} | addresses


def _read_page() -> dict[str, tuple[bytes, str]]:
    """The control page's files (gramophone/data/ui), read once."""
    folder = resources.files("gramophone") / "data" / "ui"
    return {item.name: (item.read_bytes(), UI_TYPES[item.name[item.name.rfind("."):]])
            for item in folder.iterdir() if item.name[item.name.rfind("."):] in UI_TYPES}
