"""A small HTTP/1.1 load generator (asyncio + uvloop), run in its own process by the benchmarks.

    python bench/loadgen.py --port 8000 --paths paths.txt --requests 60000 --connections 64

Sends exactly ``--requests`` GETs over ``--connections`` keep-alive connections, cycling through
the paths in the file, waits for every response, and prints one JSON object: the count, the
status codes, requests per second, and latency percentiles in milliseconds. A fixed count (not a
duration) is what lets a benchmark check that every request became a stored event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends one GET and waits for its whole response."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length = 0
        at = head.find(b"content-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at)
            length = int(head[at + 15 : line_end if line_end > 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[end + 4 + length :]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, raw: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return await self.waiter


async def _worker(
    host: str,
    port: int,
    requests: list[bytes],
    next_index: list[int],
    total: int,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Connection, host, port)
    while next_index[0] < total:
        index = next_index[0]
        next_index[0] += 1
        started = time.perf_counter()
        status = await conn.request(requests[index % len(requests)])
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1
    assert conn.transport is not None
    conn.transport.close()


async def run(
    host: str, port: int, paths: list[str], total: int, connections: int
) -> dict[str, object]:
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Mozilla/5.0 (Macintosh) "
        f"AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15\r\n\r\n".encode()
        for p in paths
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = [0]
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _worker(host, port, requests, next_index, total, latencies, statuses)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 2)

    return {
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    paths = args.paths.read_text().split()
    job = run(args.host, args.port, paths, args.requests, args.connections)
    result = uvloop.run(job) if uvloop is not None else asyncio.run(job)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
