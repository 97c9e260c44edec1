"""Container health probe: GET a path of the local service, exit 0 on a 2xx answer.

python:3.11-slim has no curl, so this uses only the standard library. Usage:

    python /opt/servicetrail/healthcheck.py [/healthz | /readyz]

The port is PORT when set, else the default port of the service that runs as PID 1
(`python -m services.<name>`), the same defaults as services/<name>/settings.py.
"""

from __future__ import annotations

import http.client
import os
import sys
from pathlib import Path
from typing import Final

DEFAULT_PORTS: Final = {
    "intake": 8001,
    "dispatch": 8002,
    "ledger": 8003,
    "metrics": 8004,
}
TIMEOUT_SECONDS: Final = 4.0


def service_port() -> int:
    configured = os.environ.get("PORT")
    if configured:
        return int(configured)
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = []
    for arg in argv:
        module = arg.decode(errors="replace")
        if module.startswith("services."):
            return DEFAULT_PORTS.get(module.removeprefix("services."), 8001)
    return DEFAULT_PORTS["intake"]


def probe(path: str) -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", service_port(), timeout=TIMEOUT_SECONDS
    )
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except OSError as err:
        sys.stderr.write(f"{path}: {err}\n")
        return 1
    finally:
        connection.close()
    if 200 <= status < 300:
        return 0
    sys.stderr.write(f"{path}: HTTP {status}\n")
    return 1


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1] if len(sys.argv) > 1 else "/healthz"))
