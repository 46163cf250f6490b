"""A WebSocket origin on 127.0.0.1 for the end-to-end tests (the `websockets` library).

It echoes every text and binary message, closes with a code when asked (a text message
`close CODE REASON`), negotiates a subprotocol from its own list, and records every handshake it
accepted (path and headers). `refuse` makes it answer handshakes with that HTTP status instead.
Bounded: it serves until stopped, and every test stops it.
"""

from __future__ import annotations

import threading
from typing import Optional

from websockets.sync.server import ServerConnection, serve

MAX_MESSAGE = 4 * 1024 * 1024


class WsOrigin:
    def __init__(self, name: str, subprotocols: Optional[list[str]] = None):
        self.name = name
        self.subprotocols = subprotocols
        self.refuse: Optional[int] = None
        self.handshakes: list[dict] = []
        self._server = None
        self._thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _process_request(self, connection: ServerConnection, request):
        if self.refuse is not None:
            return connection.respond(self.refuse, f"{self.name} refuses\n")
        return None

    def _handler(self, ws: ServerConnection) -> None:
        self.handshakes.append({"path": ws.request.path,
                                "headers": {k.lower(): v for k, v in ws.request.headers.raw_items()}})
        for message in ws:
            if isinstance(message, str) and message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                ws.close(int(code), reason)
                return
            if isinstance(message, str) and message == "whoami":
                ws.send(self.name)
                continue
            ws.send(message)

    def start(self) -> "WsOrigin":
        mine = self.subprotocols or []
        # The first of its own subprotocols the client offers; none offered is fine too.
        select = lambda _conn, offered: next((p for p in mine if p in offered), None)  # noqa: E731
        self._server = serve(self._handler, "127.0.0.1", 0, select_subprotocol=select,
                             process_request=self._process_request, max_size=MAX_MESSAGE)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
