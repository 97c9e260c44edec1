"""HTTP/1.1 by hand on a socket, for tests about what happens to the connection."""

from __future__ import annotations

import asyncio


def get_request(path: str) -> bytes:
    """A keep-alive GET of `path`."""
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the next response (bodies with Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(
        int(line.split(":", 1)[1])
        for line in lines
        if line.lower().startswith("content-length:")
    )
    return status, await reader.readexactly(length)
