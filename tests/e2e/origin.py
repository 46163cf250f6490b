"""A real HTTP origin server on 127.0.0.1 for end-to-end tests (standard library only).

Each server answers by path, and records every request it received (method, path, query,
headers, body digest) so that tests can assert what the gateway forwarded:

- anything else: 200 JSON echo {"server", "method", "path", "query", "headers", "body_len",
  "body_sha256"}; with a `set-cookie` and an `x-internal-trace` header;
- /big/N: N deterministic bytes (see `big_body`), with content-length;
- /gzip: a gzip-encoded text body (`GZIP_PLAIN`, encoded as `GZIP_BYTES`, the same bytes every
  time), `content-encoding: gzip`;
- /text/N: N bytes of text (`text_body`), `content-type` from `type=` (default `text/plain;
  charset=utf-8`), `cache-control` from `cc=`, `etag` from `etag=`, and with `chunked=1` sent
  chunked without a length;
- /sse: a server-sent event stream: one event, a pause of `gap_ms` (default 1500, at most 5000),
  a second event, the end; each event's send time is recorded in `sse_sent` (name, monotonic);
- /redirect: 302 with `location` and `content-location` pointing at this server itself;
- /slow/MS: waits MS milliseconds before answering (bounded to 30 s);
- /reveal: `server`, `x-powered-by`, `via`, and a header named in `connection`;
- /status/CODE: answers CODE with a JSON body;
- /html/...: an HTML page saying who the gateway says the user is (x-user-id, x-user-email, and
  whether an x-portcullis-identity token came), for the browser login test;
- .../headers (any path ending so, whatever the server's base path): answers with exactly the
  headers the query names, `h=NAME:VALUE` (repeatable, in order), and `status=CODE` (default
  200), so that a test can make an origin answer with any header form naming any address;
  what it answered is recorded in `answered` (lists of (name, value)).

Every Origin that was ever started is in `ORIGIN_ADDRESSES` (host, port), for the end-to-end
address scan (conftest.py): no response header a client receives may name one.

Whatever the path, a test can set `origin.mode`: "hang" (no answer for `hang_s` seconds, bounded),
or "503" (503 with a JSON body naming the server). `stop()` closes the listening socket and every
open connection, so a stopped origin really is gone (refused), and `start()` again reopens it on
the same port.

Request bodies may be chunked (workerd streams bodies of unknown length): they are decoded.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

GZIP_PLAIN = ("portcullis gzip check: " + "abcdefghij" * 400).encode()
GZIP_BYTES = gzip.compress(GZIP_PLAIN, mtime=0)


def text_body(n: int) -> bytes:
    """N bytes of compressible text that differ along the whole length."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += f"line {i}: the quick brown fox jumps over the lazy dog\n".encode()
        i += 1
    return bytes(out[:n])


def big_body(n: int) -> bytes:
    """N bytes that differ along the whole length, so a shifted or truncated copy shows."""
    block = hashlib.sha256(b"portcullis").digest() * 2048  # 64 KiB
    out = bytearray()
    i = 0
    while len(out) < n:
        out += bytes((b + i) % 256 for b in block[:1024])
        i += 1
    return bytes(out[:n])


def free_port() -> int:
    """A port that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Received:
    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "origin-test/1.0"
    sys_version = "Python-internal"

    def log_message(self, *args):  # keep test output clean
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                if not line:  # the connection closed mid-body: no complete request
                    raise ConnectionError("chunked body cut short")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise ConnectionError("chunked body cut short")
                out += chunk
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise ConnectionError("body cut short")
        return data

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_chunked(self, status: int, chunks: list[bytes], headers: list[tuple[str, str]]):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        if self.command != "HEAD":
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")

    def _handle(self):
        origin: Origin = self.server.owner  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        body = self._read_body()
        headers = [(k.lower(), v) for k, v in self.headers.items()]
        origin.received.append(Received(self.command, path, query, headers, body))
        del origin.received[:-20000]  # bounded, for long demo runs
        here = f"http://127.0.0.1:{origin.port}"
        if path == "/healthz":  # the active health check's probe: its status is switchable
            return self._send(origin.healthz_status, b"", [("cache-control", "no-store")])
        if origin.mode == "hang":
            time.sleep(min(origin.hang_s, 30))
        elif origin.mode == "503":
            return self._send(503, json.dumps({"server": origin.name}).encode(),
                              [("content-type", "application/json"), ("retry-after", "1")])

        if path.startswith("/slow/"):
            time.sleep(min(int(path.split("/")[2]), 30_000) / 1000)
        if path.startswith("/big/"):
            data = big_body(int(path.split("/")[2]))
            return self._send(200, data, [("content-type", "application/octet-stream")])
        if path == "/gzip":
            return self._send(200, GZIP_BYTES, [("content-type", "text/plain"), ("content-encoding", "gzip")])
        if path.startswith("/text/"):
            from urllib.parse import parse_qs
            params = parse_qs(query)
            data = text_body(min(int(path.split("/")[2]), 10_000_000))
            extra = [("content-type", params.get("type", ["text/plain; charset=utf-8"])[0])]
            if "cc" in params:
                extra.append(("cache-control", params["cc"][0]))
            if "etag" in params:
                extra.append(("etag", params["etag"][0]))
            if params.get("chunked") == ["1"]:
                return self._send_chunked(200, [data[: len(data) // 2], data[len(data) // 2:]], extra)
            return self._send(200, data, extra)
        if path == "/sse":
            from urllib.parse import parse_qs
            gap = min(int(parse_qs(query).get("gap_ms", ["1500"])[0]), 5000) / 1000
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i, name in enumerate(["first", "second"]):
                if i:
                    time.sleep(gap)
                event = f"id: {i + 1}\ndata: {name}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                origin.sse_sent.append((name, time.monotonic()))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        if path == "/redirect":
            return self._send(302, b"", [("location", f"{here}/elsewhere?x=1"), ("content-location", f"{here}/doc")])
        if path.startswith("/cacheable"):
            # Counts its hits per path and query; headers chosen by the query: cc=VALUE gives
            # cache-control, cookie=1 a set-cookie.
            from urllib.parse import parse_qs
            params = parse_qs(query)
            origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
            extra = [("content-type", "application/json")]
            if "cc" in params:
                extra.append(("cache-control", params["cc"][0]))
            if "cookie" in params:
                extra.append(("set-cookie", "session=abc"))
            body = json.dumps({"server": origin.name, "path": path, "query": query, "n": origin.hits[self.path],
                               "user": self.headers.get("x-user")}).encode()
            return self._send(200, body, extra)
        if path.startswith("/html/"):
            who = f"{self.headers.get('x-user-email') or 'anonymous'} ({self.headers.get('x-user-id') or '-'})"
            token = self.headers.get("x-portcullis-identity")
            page = (f"<!doctype html><html><head><title>{html.escape(origin.name)}</title></head><body>"
                    f"<h1>Hello from {html.escape(origin.name)}</h1><p>Signed in as <b id=\"who\">{html.escape(who)}</b></p>"
                    f"<p id=\"identity\">identity token: {'present, ' + str(len(token)) + ' bytes' if token else 'none'}</p>"
                    f"<p>path: <code>{html.escape(self.path)}</code></p></body></html>")
            return self._send(200, page.encode(), [("content-type", "text/html; charset=utf-8")])
        if path.endswith("/headers"):
            from urllib.parse import parse_qs
            params = parse_qs(query, keep_blank_values=True)
            answer = [tuple(item.split(":", 1)) for item in params.get("h", []) if ":" in item]
            origin.answered.append(answer)
            del origin.answered[:-1000]
            status = int(params.get("status", ["200"])[0])
            return self._send(status, b"headers", answer)
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            return self._send(code, json.dumps({"status": code}).encode(), [("content-type", "application/json")])
        extra = []
        if path == "/reveal":
            extra = [("x-powered-by", "Express"), ("via", "1.1 internal-proxy"), ("connection", "x-internal-hop"), ("x-internal-hop", "secret")]
        echo = {
            "server": origin.name,
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        return self._send(
            200,
            json.dumps(echo).encode(),
            [("content-type", "application/json"), ("set-cookie", "origin=1"), ("x-internal-trace", "t-1")] + extra,
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.connections: set = set()
        self.lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client (the gateway) that gave up on a hanging or stopped origin is expected here.
        pass

    def close_all(self):
        with self.lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LocalServer:
    """A server on 127.0.0.1, served on a thread: start()/stop(), or `with`. A subclass names its
    request handler class as `handler`; the handler finds the object as `self.server.owner`.
    `start()` again after `stop()` reopens the same port."""

    handler: type

    def __init__(self):
        self._server: Optional[_Server] = None
        self.port: Optional[int] = None

    def start(self):
        self._server = _Server(("127.0.0.1", self.port or 0), self.handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


ORIGIN_ADDRESSES: set[tuple[str, int]] = set()
"""(host, port) of every Origin started in this process: the addresses the scan looks for."""


class Origin(LocalServer):
    """One origin server on 127.0.0.1; `with Origin("a") as o:` or start()/stop()."""

    handler = _Handler

    def start(self):
        super().start()
        ORIGIN_ADDRESSES.add(("127.0.0.1", self.port))
        return self

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.received: list[Received] = []
        self.mode = "ok"
        # What GET /healthz answers (an active health check's probe).
        self.healthz_status = 200
        self.hang_s = 10.0
        self.hits: dict[str, int] = {}
        self.answered: list[list[tuple[str, str]]] = []
        self.sse_sent: list[tuple[str, float]] = []

    def count(self, since: int = 0) -> int:
        """Requests received from index `since` on."""
        return len(self.received) - since

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def last(self) -> Received:
        assert self.received, f"origin {self.name} received nothing"
        return self.received[-1]


def main() -> None:
    """`python3 tests/e2e/origin.py NAME PORT`: run one demo origin until interrupted."""
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: origin.py NAME PORT")
    name, port = sys.argv[1], int(sys.argv[2])
    origin = Origin(name)
    server = _Server(("127.0.0.1", port), _Handler)
    server.owner = origin  # type: ignore[attr-defined]
    origin.port = port
    print(f"demo origin '{name}' on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
