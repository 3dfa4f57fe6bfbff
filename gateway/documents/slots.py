"""Uploads in flight per tenant on this gateway.

An upload is the costliest request a gateway serves: it streams up to the
upload cap to disk, hashes it, sniffs it and copies it to blob storage.  One
tenant sending many at once (a script, or an attacker's hostile-file suite)
would take the gateway's disk bandwidth, scratch space (up to the upload cap
per upload) and threads from every other tenant, so each tenant may have
`per_tenant` uploads in flight on a gateway; one more
is refused at once, before its body is read, with a 429 and `Retry-After: 1`
(the slot frees as soon as one of its uploads ends).  The count lives in this
process: it guards this gateway's resources, not an account-wide allowance
(that is the hourly request limit, in SQL).  Entries exist only while an
upload is in flight, so the table cannot grow past the uploads being served.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from quarry.errors import RateLimited

RETRY_AFTER_SECONDS = 1


class UploadSlots:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._in_flight: dict[uuid.UUID, int] = {}

    def in_flight(self, tenant_id: uuid.UUID) -> int:
        return self._in_flight.get(tenant_id, 0)

    @contextmanager
    def hold(self, tenant_id: uuid.UUID) -> Iterator[None]:
        """One of the tenant's slots for the block; RateLimited if none is free."""
        held = self._in_flight.get(tenant_id, 0)
        if held >= self.per_tenant:
            raise RateLimited(
                f"{held} of your uploads are still in progress on this server; send the next one when one of"
                " them has been answered.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                extensions={
                    "limit": "uploads_in_flight",
                    "limit_value": self.per_tenant,
                    "retry_after": RETRY_AFTER_SECONDS,
                },
            )
        self._in_flight[tenant_id] = held + 1
        try:
            yield
        finally:
            remaining = self._in_flight[tenant_id] - 1
            if remaining:
                self._in_flight[tenant_id] = remaining
            else:
                del self._in_flight[tenant_id]
