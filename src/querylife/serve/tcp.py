"""TCP_NODELAY on every connection the service accepts, however uvicorn bound the listening socket.

With ``--workers N`` uvicorn binds the listener itself and hands it to the workers; it creates it with ``proto`` 0,
accepted sockets inherit that, and asyncio turns Nagle's algorithm off only for sockets that say
``IPPROTO_TCP`` (uvicorn issue #3149). A response written in two pieces (head, then body) then waits for the
client's delayed ACK: +40-50 ms on every keep-alive request whose answer fits one segment, which is what
benchmarks/results/serve_latency_workers2.md showed on the 100-candidate cells. One worker is not affected
(asyncio binds from ``getaddrinfo`` there), but setting the option again costs nothing.

Example::

    uvicorn.run("querylife.serve.run:app_from_env", factory=True, workers=2, http=NoDelayHTTPProtocol)
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["NoDelayHTTPProtocol", "set_nodelay"]


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Turn Nagle's algorithm off on a TCP transport's socket; False (and nothing done) for other transports
    (a Unix socket, a transport without a socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools when installed, else h11) with TCP_NODELAY set on connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
