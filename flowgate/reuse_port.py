"""The ``SO_REUSEPORT`` socket the HTTP and MQTT ports are shared through by ``--workers``.

The supervisor (``flowgate/supervisor.py``) holds one per port so the port stays
reserved (0 picks a free one for every worker); each worker (``flowgate/server.py``)
binds its own beside it and the kernel spreads connections over them.
"""

from __future__ import annotations

import socket


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A bound, not yet listening ``SO_REUSEPORT`` socket on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
