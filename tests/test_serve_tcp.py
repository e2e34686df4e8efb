"""TCP_NODELAY on accepted connections (querylife.serve.tcp), also on a listener bound the way uvicorn binds it
for ``--workers`` (``proto`` 0, where asyncio itself leaves Nagle's algorithm on)."""

from __future__ import annotations

import asyncio
import socket

import pytest

pytest.importorskip("uvicorn")
import uvicorn  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from querylife.serve.tcp import NoDelayHTTPProtocol, set_nodelay  # noqa: E402


async def _app(scope, receive, send):  # the smallest ASGI app: 200 "ok"
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _accepted_nodelay(protocol_class) -> tuple[int, bytes]:
    """Serve ``_app`` with ``protocol_class`` on a proto-0 loopback listener; the server side's TCP_NODELAY and
    the answer to one request."""

    async def run() -> tuple[int, bytes]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn's Config.bind_socket
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert listener.proto == 0
        config = uvicorn.Config(_app, http=protocol_class, log_level="warning", lifespan="off")
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: config.http_protocol_class(config=config, server_state=state, app_state={}), sock=listener)
        reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(2)
        (conn,) = state.connections
        flag = conn.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        server.close()
        return flag, head.split(b"\r\n")[0] + b" " + body

    return asyncio.run(run())


def test_nodelay_protocol_sets_tcp_nodelay_on_a_proto0_listener():
    flag, answer = _accepted_nodelay(NoDelayHTTPProtocol)
    assert flag != 0
    assert answer == b"HTTP/1.1 200 OK ok"  # still uvicorn's protocol: the request is answered


def test_set_nodelay_ignores_non_tcp_transports():
    class Fake(asyncio.BaseTransport):
        def __init__(self, sock):
            super().__init__()
            self._sock = sock

        def get_extra_info(self, name, default=None):
            return self._sock if name == "socket" else default

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert set_nodelay(Fake(a)) is False
    assert set_nodelay(Fake(None)) is False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert set_nodelay(Fake(s)) is True
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
