"""Misbehaving servers on 127.0.0.1 for deadline and robustness tests.

Each server listens on an ephemeral loopback port, serves every connection in a daemon thread
and is stopped (listener and every accepted socket closed) when its ``with`` block ends, so a
test leaves nothing listening. The behaviours:

* :func:`black_hole`    accepts and never sends a byte (reads and discards what it gets);
* :func:`garbage`       answers every connection at once with bytes no protocol accepts, then keeps it open;
* :func:`silent_websocket` completes a real WebSocket upgrade (101 with the right
  ``Sec-WebSocket-Accept``) and then sends nothing, ever;
* :func:`drip`          sends a given byte string one byte per ``interval`` seconds, repeating its
  tail forever, so no single read ever waits long but the answer never ends (for HTTP: a
  status line followed by an endless header; for PostgreSQL: "no SSL" then an endless message);
* :func:`pg_stall`      speaks PostgreSQL's protocol far enough to let a client log in, then never
  answers a query (a database that hangs on every statement).

``server.url("http")`` gives ``http://127.0.0.1:PORT``; ``server.accepted`` counts connections, so
a test can prove the client really reached it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator

__all__ = ["HTTP_DRIP", "PG_DRIP", "Server", "black_hole", "drip", "garbage", "pg_stall", "silent_websocket"]

Handler = Callable[["Server", socket.socket], None]

# A status line and then a header that never ends: each read gets a byte, the headers never complete.
HTTP_DRIP = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 64
# "N" (no SSL) and then an ErrorResponse whose length promises far more than ever comes.
PG_DRIP = b"N" + b"E" + struct.pack("!I", 1 << 20) + b"S" + b"x" * 64
GARBAGE = bytes(range(256)) * 4


class Server:
    """One listening socket on 127.0.0.1 and the threads serving it."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self._handler = handler
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.stopped = threading.Event()
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name=f"adversary-{name}", daemon=True)
        self._thread.start()

    def url(self, scheme: str = "http") -> str:
        """``scheme://127.0.0.1:PORT``."""
        return f"{scheme}://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name=f"adversary-{self.name}-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self._handler(self, conn)

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the server is stopping (handlers end their loops on it)."""
        return not self.stopped.wait(seconds)

    def read_some(self, conn: socket.socket, timeout: float = 0.1) -> bytes | None:
        """What the peer sent within ``timeout`` (b"" when nothing), None once it closed."""
        ready, _, _ = select.select([conn], [], [], timeout)
        if not ready:
            return b""
        data = conn.recv(65536)
        return data if data else None

    def read_until(self, conn: socket.socket, marker: bytes, limit: int = 65536) -> bytes | None:
        """Read until ``marker`` (e.g. the end of the HTTP headers); None if the peer closed or the server stops."""
        buf = b""
        while marker not in buf and len(buf) < limit:
            if self.stopped.is_set():
                return None
            got = self.read_some(conn)
            if got is None:
                return None
            buf += got
        return buf

    def hold(self, conn: socket.socket) -> None:
        """Keep the connection open, reading and discarding, until the peer closes or the server stops."""
        while not self.stopped.is_set():
            if self.read_some(conn) is None:
                return

    def stop(self) -> None:
        """Close the listener and every connection; wait for the accept loop to end."""
        self.stopped.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    conn.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _serving(name: str, handler: Handler) -> Iterator[Server]:
    server = Server(name, handler)
    try:
        yield server
    finally:
        server.stop()


def black_hole() -> contextlib.AbstractContextManager[Server]:
    """Accepts every connection and never answers."""
    return _serving("black-hole", lambda server, conn: server.hold(conn))


def garbage(payload: bytes = GARBAGE) -> contextlib.AbstractContextManager[Server]:
    """Answers every connection with ``payload`` at once (no protocol's greeting) and keeps it open."""

    def handle(server: Server, conn: socket.socket) -> None:
        conn.sendall(payload)
        server.hold(conn)

    return _serving("garbage", handle)


def drip(payload: bytes = HTTP_DRIP, interval: float = 1.0, *,
         wait_for_request: bool = True) -> contextlib.AbstractContextManager[Server]:
    """Sends ``payload`` one byte per ``interval`` seconds and then its last byte forever.

    With ``wait_for_request`` it first waits for the client to send something (an HTTP request,
    PostgreSQL's SSLRequest), as a real server would.
    """

    def handle(server: Server, conn: socket.socket) -> None:
        while wait_for_request:
            got = server.read_some(conn)
            if got is None or server.stopped.is_set():
                return
            if got:
                break
        i = 0
        while server.sleep(0 if i == 0 else interval):
            byte = payload[i] if i < len(payload) else payload[-1]
            conn.sendall(bytes([byte]))
            i += 1

    return _serving("drip", handle)


def silent_websocket() -> contextlib.AbstractContextManager[Server]:
    """Upgrades to a WebSocket (101 with the right accept key) and then says nothing."""

    def handle(server: Server, conn: socket.socket) -> None:
        request = server.read_until(conn, b"\r\n\r\n")
        if request is None:
            return
        key = b""
        for line in request.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        server.hold(conn)

    return _serving("silent-websocket", handle)


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def pg_stall() -> contextlib.AbstractContextManager[Server]:
    """Lets a PostgreSQL client log in (no SSL, no password) and then never answers a statement."""

    def handle(server: Server, conn: socket.socket) -> None:
        pending = b""

        def take(n: int) -> bytes | None:
            nonlocal pending
            while len(pending) < n:
                got = server.read_some(conn)
                if got is None or server.stopped.is_set():
                    return None
                pending += got
            out, pending = pending[:n], pending[n:]
            return out

        while True:
            head = take(8)
            if head is None:
                return
            length, code = struct.unpack("!II", head)
            rest = take(length - 8) if length > 8 else b""
            if rest is None:
                return
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not offered
                conn.sendall(b"N")
                continue
            break  # the StartupMessage
        params = {b"server_version": b"15.0", b"client_encoding": b"UTF8", b"server_encoding": b"UTF8",
                  b"DateStyle": b"ISO, MDY", b"integer_datetimes": b"on", b"standard_conforming_strings": b"on",
                  b"TimeZone": b"UTC"}
        out = _pg_message(b"R", struct.pack("!I", 0))
        for k, v in params.items():
            out += _pg_message(b"S", k + b"\0" + v + b"\0")
        out += _pg_message(b"K", struct.pack("!II", os.getpid(), 1))
        out += _pg_message(b"Z", b"I")
        conn.sendall(out)
        server.hold(conn)  # every statement from here on waits forever

    return _serving("pg-stall", handle)
