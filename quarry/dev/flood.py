"""A forged-key flood and /openapi.json readers, for tests and benchmarks of the
gateway's throttles (tests/py/gateway/auth/test_under_load.py, bench/key_flood.py).

`Flood` runs in a process of its own (a fresh interpreter), so the attack does
not slow the client that measures the victim, and speaks HTTP/1.1 by hand on
keep-alive connections: httpx costs the attacking process more CPU than the
gateway spends refusing.  Forged keys are well-formed (valid checksum), from one
client address (sent in X-Forwarded-For: start the gateway with
TRUSTED_PROXY_HEADER=X-Forwarded-For so the victim can have another).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from quarry.keys.format import BASE62, checksum
from quarry.priority import lower_cpu_priority

if TYPE_CHECKING:
    import multiprocessing.synchronize
    from multiprocessing.queues import Queue

Statuses = Counter[int | str]  # HTTP status, or the name of a connection error, and how often


def forged_key(lookup_id: str | None = None) -> str:
    """A well-formed key (valid checksum) that nobody was issued; on `lookup_id` if given."""
    lookup_id = lookup_id or "".join(secrets.choice(BASE62) for _ in range(12))
    body = f"sk_live_{lookup_id}_{''.join(secrets.choice(BASE62) for _ in range(32))}"
    return body + checksum(body)


class Flood:
    """`forgers` concurrent forged-key requests (half on `lookup_id`, if given) and `readers`
    concurrent /openapi.json readers against 127.0.0.1:`port`, from `start()` until `stop()`."""

    def __init__(
        self,
        port: int,
        *,
        address: str,
        lookup_id: str | None,
        forgers: int = 400,
        readers: int = 50,
        niceness: int | None = None,
    ):
        """`niceness`: run the flood at that lower CPU priority, in a session of its own (as if from
        another machine: on a small one the attacker's CPU would otherwise be the service's)."""
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: Queue[tuple[Statuses, Statuses]] = context.Queue()
        self._process = context.Process(
            target=_run,
            args=(port, address, lookup_id, forgers, readers, niceness, self._stop, self._results),
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def stop(self) -> tuple[Statuses, Statuses]:
        """The statuses the forgers and the readers got."""
        self._stop.set()
        results = self._results.get(timeout=60)
        self._process.join(timeout=30)
        return results


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, headers: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n{headers}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def _run(
    port: int,
    address: str,
    lookup_id: str | None,
    forgers: int,
    readers: int,
    niceness: int | None,
    stop: multiprocessing.synchronize.Event,
    results: Queue[tuple[Statuses, Statuses]],
) -> None:
    if niceness is not None:
        lower_cpu_priority(niceness, own_session=True)

    async def client(path: str, headers: Callable[[], str], statuses: Statuses) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    while not stop.is_set():
                        statuses[await _get(reader, writer, path, headers())] += 1
                finally:
                    writer.close()
            except (OSError, asyncio.IncompleteReadError) as error:
                statuses[type(error).__name__] += 1

    def forged(index: int) -> Callable[[], str]:
        on = lookup_id if index % 2 else None
        return lambda: f"Authorization: Bearer {forged_key(on)}\r\nX-Forwarded-For: {address}\r\n"

    async def run() -> tuple[Statuses, Statuses]:
        attack: Statuses = Counter()
        reads: Statuses = Counter()
        await asyncio.gather(
            *(client("/api/documents", forged(index), attack) for index in range(forgers)),
            *(client("/openapi.json", lambda: f"X-Forwarded-For: {address}\r\n", reads) for _ in range(readers)),
        )
        return attack, reads

    results.put(asyncio.run(run()))
