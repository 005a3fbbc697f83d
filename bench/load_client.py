"""A lean HTTP/1.1 load generator for bench_load: C keep-alive connections on one asyncio loop,
each sending its next request as soon as the previous answer is read (C requests in flight).

Hand-written requests and a minimal response reader: an HTTP client library costs more CPU per
request than the servers measured here, and on shared cores that cost is taken from them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Run:
    """Latencies (ms), status counts and the ids of the answers (`"id"` of a JSON body)."""

    latencies_ms: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    server_cpu_ms: float | None = None  # per request, when the caller measured the server (bench_load)
    redis_cpu_ms: float | None = None


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(port: int, n: int, concurrency: int, make: Callable[[int], bytes]) -> Run:
    """Send `make(i)` for i in range(n) over `concurrency` connections to 127.0.0.1:`port`."""
    run = Run()
    counter = iter(range(n))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                writer.write(make(i))
                status, body = await _answer(reader)
                run.latencies_ms.append((time.perf_counter() - t0) * 1000)
                run.codes[status] = run.codes.get(status, 0) + 1
                if status in (200, 202):
                    run.ids.append(json.loads(body)["id"])
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    run.wall_s = time.perf_counter() - t0
    return run


def run(port: int, n: int, concurrency: int, make: Callable[[int], bytes]) -> Run:
    try:
        import uvloop

        return uvloop.run(drive(port, n, concurrency, make))
    except ImportError:
        return asyncio.run(drive(port, n, concurrency, make))
