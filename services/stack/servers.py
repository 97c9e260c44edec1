"""What both embedded servers share: their errors, free ports and log excerpts.

The embedded servers (`services.stack.postgres`, `services.stack.broker`) are the
development and test infrastructure; no service imports them at run time.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Final

LOOPBACK: Final = "127.0.0.1"
LOG_TAIL_CHARS: Final = 3000


class EmbeddedInfrastructureError(RuntimeError):
    """The embedded PostgreSQL or broker could not be started, used or stopped."""


class PortInUseError(EmbeddedInfrastructureError):
    """The requested TCP port already has a listener."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether nothing listens on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers themselves set it, so sockets of a previous run
        # lingering in TIME_WAIT do not count as "taken"; a listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def require_free_port(host: str, port: int, *, what: str) -> None:
    """Raise `PortInUseError` naming `what` unless `host:port` is free."""
    if not port_is_free(port, host):
        raise PortInUseError(
            f"cannot start {what} on {host}:{port}: the port is already in use; "
            "stop whatever listens there or choose another port (or pass port=None "
            "for a free one)"
        )


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a server's log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-chars:] or "(empty log)"
