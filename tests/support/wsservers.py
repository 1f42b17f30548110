"""A real WebSocket echo server: the `websockets` library's, on a thread, on 127.0.0.1.

    with echo_server() as port:
        run_check("websocket", target=f"ws://127.0.0.1:{port}/", send="hi", expect="^hi$")

It echoes every message, answers "big" with 5000 bytes, refuses the upgrade of /private with
403 (websockets' process_request), and closes /busy at once with code 1013.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.server import ServerConnection, serve

BIG = 5000  # bytes of the answer to "big"


def _echo(connection: ServerConnection) -> None:
    if connection.request is not None and connection.request.path == "/busy":
        connection.close(1013, "try again later")
        return
    for message in connection:
        connection.send("x" * BIG if message == "big" else message)


def _refuse(connection: ServerConnection, request: Any) -> Any:
    if request.path == "/private":
        return connection.respond(403, "Forbidden\n")
    return None


@contextmanager
def echo_server(tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A websockets echo server on 127.0.0.1, TLS with `tls`; its port."""
    with serve(_echo, "127.0.0.1", 0, ssl=tls, process_request=_refuse) as server:
        thread = threading.Thread(target=server.serve_forever, name="wsserver", daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(5)
    assert not thread.is_alive(), "the websocket server did not stop"
