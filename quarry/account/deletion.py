"""Account deletion (GDPR Art. 17): block at once, then erase everything, step by step.

`request_deletion` (DELETE /api/account, JWT only) records the deletion in
SQL, which in the same transaction revokes every API key and defers
`account:delete`; from then on the gateway refuses the tenant (403) except
to read the deletion's progress.  The job (`AccountEraser.run`) goes through
STEPS in order; each is idempotent and recorded when done
(internal.finish_deletion_step), so a worker killed anywhere resumes with the
first step not recorded:

1. inventory        count the tenant's rows in every tenant table (the receipt's numbers)
2. google_token     revoke the Drive refresh token at Google, forget the connection
3. stripe_customer  cancel live subscriptions, delete the Stripe customer
4. jobs             delete the tenant's queued/finished jobs; wait for running ones to end
5. vectors          delete the documents (their chunks and texts go with them); the outbox
                    relay removes their points (and files); wait until it has; where this
                    process owns the index too, drop every point of the tenant outright
6. blobs            delete every stored file under the tenant's prefixes (originals, exports)
7. rows             every row in every table with a tenant_id (catalog-driven), and the queue
8. auth_user        Supabase Auth's Admin API: `auth.admin.delete_user` (supabase client)
9. receipt          email what was erased (counts) to the address the account had

Then the deletion record itself goes and the job's own queue row is made
anonymous: nothing with the tenant's id is left anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quarry.account.auth_admin import AuthAdmin
from quarry.account.models import AccountDeletion, DeleteAccount, DeletionStep
from quarry.billing.stripe_api import BillingNotConfigured, StripeApi
from quarry.db import TenantDatabase
from quarry.drive.service import Drive
from quarry.errors import NotFound, Unavailable
from quarry.exports.storage import ArchiveStore, export_prefix
from quarry.index.handle import IndexHandle
from quarry.mail import Mail, Mailer
from quarry.principal import Principal
from quarry.storage.blobs import BlobStore

logger = logging.getLogger("quarry.account")

STEPS = ("inventory", "google_token", "stripe_customer", "jobs", "vectors", "blobs", "rows", "auth_user", "receipt")
DOCUMENT_BATCH = 500
OUTBOX_WAIT_SECONDS = 60.0
OUTBOX_POLL_SECONDS = 0.25

_DELETION_COLUMNS = "state, requested_at, started_at, updated_at, steps, counts, last_error, attempts"


class DeletionWaiting(Unavailable):
    """Something the deletion must wait for (running jobs, the index relay): it is retried shortly."""

    slug = "deletion-waiting"

    def __init__(self, internal: str) -> None:
        super().__init__("The account deletion is waiting; it continues shortly.", internal=internal)


def _deletion(row: dict[str, Any]) -> AccountDeletion:
    done = row["steps"] or {}
    return AccountDeletion(
        state=row["state"],
        requested_at=row["requested_at"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        steps=[DeletionStep(name=name, done_at=done.get(name)) for name in STEPS],  # type: ignore[arg-type]
        counts=row["counts"] or {},
        last_error=row["last_error"],
        attempts=row["attempts"],
    )


async def request_deletion(database: TenantDatabase, principal: Principal, request: DeleteAccount) -> AccountDeletion:
    """Block the account now and queue its erasure (the same deletion again if it is under way)."""
    row = await database.fetch_one(
        f"select {_DELETION_COLUMNS} from internal.request_account_deletion(%s, %s)",  # noqa: S608 (a constant)
        (principal.tenant_id, request.confirm),
    )
    assert row is not None
    return _deletion(row)


async def deletion_status(database: TenantDatabase, tenant_id: uuid.UUID) -> AccountDeletion:
    row = await database.fetch_one(
        f"select {_DELETION_COLUMNS} from internal.account_deletion(%s)",  # noqa: S608 (a constant)
        (tenant_id,),
    )
    if row is None:
        raise NotFound("This account is not being deleted.")
    return _deletion(row)


@dataclass
class AccountEraser:
    """What erasing an account needs: the database, the stores, the index, Google, Stripe, Auth, mail.

    `after_step` is a test seam: called after a step's work and before it is recorded, it can
    stop the run there (as a killed worker would) to show that the next run completes it.
    """

    database: TenantDatabase
    blobs: BlobStore
    archives: ArchiveStore
    index: IndexHandle
    owns_index: bool
    drive: Drive | None
    stripe: StripeApi | None
    auth: AuthAdmin
    mailer: Mailer
    after_step: Callable[[str], None] | None = None

    async def run(self, tenant_id: uuid.UUID, job_id: int | None) -> str:
        """Resume the tenant's deletion from its first step not done; `erased`, or `nothing` if none is under way."""
        row = await self.database.fetch_one(
            f"select {_DELETION_COLUMNS}, email from internal.begin_account_deletion(%s)",  # noqa: S608
            (tenant_id,),
        )
        if row is None:
            return "nothing"
        done: dict[str, Any] = dict(row["steps"] or {})
        counts: dict[str, Any] = dict(row["counts"] or {})
        try:
            for step in STEPS:
                if step in done:
                    continue
                found = await getattr(self, f"_{step}")(tenant_id, job_id, row["email"], counts)
                if self.after_step is not None:
                    self.after_step(step)
                await self.database.fetch(
                    "select internal.finish_deletion_step(%s, %s, %s::jsonb)", (tenant_id, step, _json(found))
                )
                counts.update(found)
                logger.info("account deletion of %s: %s done", tenant_id, step)
        except Exception as error:
            reason = getattr(error, "detail", None) or type(error).__name__
            try:
                await self.database.fetch("select internal.deletion_step_failed(%s, %s)", (tenant_id, str(reason)))
            except Exception:  # the database is away: the job's retry records it next time
                logger.warning("could not record why the deletion of %s stopped", tenant_id)
            raise
        await self.database.fetch("select internal.forget_account_deletion(%s, %s)", (tenant_id, job_id))
        logger.info("account %s erased", tenant_id)
        return "erased"

    # --- the steps: each returns what it found and erased (merged into the deletion's counts)

    async def _inventory(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        row = await self.database.fetch_one("select internal.tenant_row_counts(%s) as found", (tenant,))
        return {"rows_found": row["found"] if row else {}}

    async def _google_token(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        if self.drive is None:
            # Drive is off here: a connection row (its token unreadable without the keys) goes with the rows.
            return {"google_token_revoked": False}
        return {"google_token_revoked": await self.drive.erase(tenant)}

    async def _stripe_customer(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        row = await self.database.fetch_one("select internal.account_billing_customer(%s) as customer", (tenant,))
        customer = row["customer"] if row else None
        if customer is None:
            return {"stripe_customer_deleted": False}
        if self.stripe is None:
            raise BillingNotConfigured("STRIPE_SECRET_KEY is not set: the Stripe customer cannot be deleted.")
        cancelled = await self.stripe.erase_customer(str(customer))
        return {"stripe_customer_deleted": True, "stripe_subscriptions_cancelled": cancelled}

    async def _jobs(self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]) -> dict[str, Any]:
        row = await self.database.fetch_one("select internal.quiesce_tenant_jobs(%s, %s) as running", (tenant, job_id))
        running = int(row["running"]) if row else 0
        if running:
            raise DeletionWaiting(f"{running} job(s) of the account are still running")
        return {}

    async def _vectors(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        deleted = 0
        while True:
            row = await self.database.fetch_one(
                "select internal.erase_tenant_documents(%s, %s) as erased", (tenant, DOCUMENT_BATCH)
            )
            batch = int(row["erased"]) if row else 0
            deleted += batch
            if batch < DOCUMENT_BATCH:
                break
        # The relay (where the index lives) drops each deleted document's points and file.
        deadline = time.monotonic() + OUTBOX_WAIT_SECONDS
        while True:
            row = await self.database.fetch_one("select internal.tenant_outbox_pending(%s) as pending", (tenant,))
            pending = int(row["pending"]) if row else 0
            if pending == 0:
                break
            if time.monotonic() > deadline:
                raise DeletionWaiting(f"the vector index has {pending} change(s) of the account still to apply")
            await asyncio.sleep(OUTBOX_POLL_SECONDS)
        if self.owns_index:
            index = await asyncio.to_thread(self.index.get)
            await asyncio.to_thread(index.delete_tenant, tenant)
            left = await asyncio.to_thread(index.count, tenant)
            if left:
                raise DeletionWaiting(f"{left} point(s) of the account are still in the index")
        return {"documents_deleted": deleted}

    async def _blobs(self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]) -> dict[str, Any]:
        originals = await asyncio.to_thread(self.blobs.delete_prefix, f"documents/{tenant}")
        archives = await asyncio.to_thread(self.archives.delete_prefix, export_prefix(tenant))
        return {"files_deleted": originals + archives}

    async def _rows(self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]) -> dict[str, Any]:
        row = await self.database.fetch_one("select internal.erase_tenant_rows(%s, %s) as erased", (tenant, job_id))
        return {"rows_deleted": row["erased"] if row else {}}

    async def _auth_user(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        await self.auth.delete_user(tenant)  # gone already (a run killed after it) is just as deleted
        return {"auth_user_deleted": True}

    async def _receipt(
        self, tenant: uuid.UUID, job_id: int | None, email: str, counts: dict[str, Any]
    ) -> dict[str, Any]:
        await self.mailer.send(Mail(to=email, subject="Your Quarry account has been deleted", text=receipt(counts)))
        return {"receipt_sent": True}


def receipt(counts: dict[str, Any]) -> str:
    """The deletion receipt: what was erased, in numbers."""
    found: dict[str, int] = counts.get("rows_found") or {}
    labels = {
        "app.documents": "documents",
        "app.chunks": "text chunks (and as many search-index vectors)",
        "app.document_texts": "extracted texts",
        "app.api_keys": "API keys",
        "app.query_log": "logged searches",
        "app.drive_folders": "Google Drive folders",
        "app.drive_files": "Google Drive file records",
        "app.export_requests": "data exports",
        "app.audit_log": "activity-log entries",
    }
    lines = [f"- {found.get(table, 0)} {label}" for table, label in labels.items()]
    others = sum(int(n) for table, n in found.items() if table not in labels)
    lines.append(f"- {others} other records (usage counters, sync runs, subscription, …)")
    lines.append(f"- {counts.get('files_deleted', 0)} stored files")
    if counts.get("google_token_revoked"):
        lines.append("- your Google Drive authorization, revoked at Google")
    if counts.get("stripe_customer_deleted"):
        lines.append("- your Stripe customer record, its subscription cancelled")
    lines.append("- your login (the account itself)")
    return (
        "Your Quarry account has been deleted, as you asked. We erased:\n\n"
        + "\n".join(lines)
        + "\n\nNothing of it is left with us; this email is the last message you will get from Quarry.\n"
    )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
