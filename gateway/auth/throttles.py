"""Failed authentications cost the caller, not the gateway.

A `WindowThrottle` counts events per key (failed authentications of a client
address or of an API key's lookup id, reads of /openapi.json by an address)
in fixed windows.  A key with `limit` events in its window is refused until
the window ends, and a key with `max_in_flight` attempts under way is refused
until one ends; both refusals are a 429 with Retry-After and cost nothing (no
database, no bcrypt).  The state is bounded: at most `max_keys` records, the
least recently used dropped first, so an attacker rotating addresses or
lookup ids cannot grow it (dropping a record forgets its count, which is the
price of a bound).

A throttled refusal is held before it is answered: a flood's clients retry
as soon as they are answered, and a sleeping request costs no CPU.  The hold
is HOLD_SECONDS, or longer when many refusals are held at once, so that all
of them together are answered at about MAX_REFUSALS_PER_SECOND, however many
connections a flood opens (times 0.5 to 1.5, so that they do not come back
in step; at most MAX_HELD at once, beyond which they are answered at once).
Without a hold, a 400-connection flood of cheap 429s kept the event loop busy
enough to slow another tenant's first key check from ~0.1 s to ~2 s; with a
fixed 1 s hold it still cost the gateway ~400 refusals a second, a third of
its event loop.

`client_address` names the caller: the socket peer, or, behind trusted
proxies, the address they saw (the `hops`-th entry from the right of the
configured header: each proxy appends the peer it saw, so entries left of
that are the client's own claims).  IPv6 addresses count per /64, the block
one subscriber usually gets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from starlette.requests import Request

from quarry.errors import RateLimited

UNKNOWN_CLIENT = "unknown"
HOLD_SECONDS = 1.0
MAX_REFUSALS_PER_SECOND = 50.0
MAX_HELD = 2000


class Throttled(RateLimited):
    """A refusal of a throttle here (not the plan's hourly limit)."""


class Tarpit:
    def __init__(
        self,
        *,
        hold_seconds: float = HOLD_SECONDS,
        max_refusals_per_second: float = MAX_REFUSALS_PER_SECOND,
        max_held: int = MAX_HELD,
    ) -> None:
        self.hold_seconds = hold_seconds
        self.max_refusals_per_second = max_refusals_per_second
        self.max_held = max_held
        self.held = 0

    @asynccontextmanager
    async def holding_refusals(self) -> AsyncIterator[None]:
        """Throttled refusals raised in the block are held before they propagate."""
        try:
            yield
        except Throttled:
            await self.hold()
            raise

    def seconds(self) -> float:
        """How long a refusal is held now: the held ones leave at about max_refusals_per_second."""
        return max(self.hold_seconds, self.held / self.max_refusals_per_second)

    async def hold(self) -> None:
        if self.held >= self.max_held:
            return
        self.held += 1
        try:
            await asyncio.sleep(self.seconds() * random.uniform(0.5, 1.5))  # noqa: S311 - timing, not secrets
        finally:
            self.held -= 1


@dataclass(slots=True)
class _Record:
    events: int = 0
    window_ends: float = 0.0
    in_flight: int = 0


class WindowThrottle:
    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        max_keys: int,
        max_in_flight: int = sys.maxsize,
        refusal: str,
        limit_name: str = "failed_authentications",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_in_flight = max_in_flight
        self.max_keys = max_keys
        self._refusal = refusal  # what a refused caller is told, before "try again in N s"
        self._limit_name = limit_name  # the problem's `limit` member
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def check(self, key: str) -> None:
        """Refuse (429) a key over its limit."""
        record = self._records.get(key)
        if record is None:
            return
        now = self._clock()
        if record.events >= self.limit and now < record.window_ends:
            self._refuse(record.window_ends - now, self._limit_name)

    @contextmanager
    def attempt(self, key: str) -> Iterator[None]:
        """An attempt that may fail: refused over the limit or with too many others in flight."""
        self.check(key)
        record = self._record(key)
        if record.in_flight >= self.max_in_flight:
            self._refuse(1.0, "authentications_in_flight")
        record.in_flight += 1
        try:
            yield
        finally:
            record.in_flight -= 1  # the record itself: harmless if it was dropped meanwhile

    def count(self, key: str) -> None:
        record = self._record(key)
        now = self._clock()
        if now >= record.window_ends:
            record.events, record.window_ends = 0, now + self.window_seconds
        record.events += 1

    def _record(self, key: str) -> _Record:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
            if len(self._records) > self.max_keys:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
        return record

    def _refuse(self, seconds: float, limit: str) -> None:
        retry_after = max(1, math.ceil(seconds))
        raise Throttled(
            f"{self._refusal}; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            extensions={"limit": limit, "retry_after": retry_after},
        )


def client_address(request: Request, *, trusted_header: str | None, hops: int) -> str:
    """The caller's address, as the throttles count it."""
    peer = request.client.host if request.client else UNKNOWN_CLIENT
    if trusted_header is None:
        return _counted(peer)
    listed = ",".join(request.headers.getlist(trusted_header))
    entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
    if not entries:
        return _counted(peer)
    return _counted(entries[-hops] if len(entries) >= hops else entries[0])


def _counted(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an IP (a test client, a unix socket): counted as it is, bounded
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
