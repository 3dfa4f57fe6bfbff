"""Plans buy speed: Pro outranks Free on one worker pool, Enterprise has workers of its own.

Starts its own database (quarry_bench_priority), the dev auth server and a
gateway, then, with no worker running, uploads a backlog of equal Free and
Pro documents (SciFact abstracts, interleaved Free, Pro, Free, …; Free's
spread over several tenants, 50 documents a month each) and:

1. starts a dedicated Enterprise worker (`python -m worker --queues enterprise`)
   and a shared one (`python -m worker --queues shared`): one pool for the
   whole backlog;
2. measures each backlog document's time to `ready` from the moment the
   shared worker takes its first job, and the median per plan;
3. once the shared worker has finished its first jobs, uploads one Enterprise
   document, which the dedicated worker takes at once: its upload→ready
   time, and how much of the shared backlog was still waiting when it was
   ready.

Free is not starved meanwhile: one fetch in internal.job_settings.
oldest_job_every (5) takes the oldest job, so Pro gets about 4/5 of the pool
while both wait (expected median ratio about 3 * 0.8 = 2.4; strict priority
would be 3).  Target: free_over_pro >= 2.  Last line:
priority: free_over_pro=… enterprise_dedicated_s=… (free_p50=… pro_p50=… backlog_waiting_at_enterprise=…%)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time

import psycopg
from _support import PYTHON, REPO_ROOT, dev_env, dev_stack, server, upload_all

from quarry.dev.database import prepare_database, with_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_priority"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SCIFACT = REPO_ROOT.parent / "shared" / "bench" / "scifact" / "corpus.jsonl"
PER_PLAN = 300
FREE_DOCUMENTS_PER_TENANT = 30  # within Free's 50 a month
ENTERPRISE_AFTER_READY = 40  # the Enterprise upload comes once the shared pool has finished this many


def abstracts(count: int) -> list[tuple[str, bytes]]:
    files = []
    with SCIFACT.open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            files.append((f"scifact-{doc['_id']}.txt", f"{doc['title']}\n\n{doc['text']}".encode()))
            if len(files) == count:
                break
    return files


def statuses(conn: psycopg.Connection[tuple[object, ...]], ids: list[str]) -> dict[str, str]:
    rows = conn.execute("select id::text, status from app.documents where id = any(%s::uuid[])", (ids,)).fetchall()
    return {str(row[0]): str(row[1]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-plan", type=int, default=PER_PLAN, help="backlog documents of each plan")
    per_plan = parser.parse_args().per_plan
    files = abstracts(2 * per_plan + 1)
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    with tempfile.TemporaryDirectory() as workdir:
        env = dev_env(DATABASE, f"{workdir}/dev", f"{workdir}/data")
        env["WORKER_METRICS_PORT"] = "0"
        settings = DevSettings.from_env(env)

        def user(name: str, plan: str) -> dict[str, str]:
            tenant = ensure_user(settings.admin_database_url, f"{name}@example.com")
            set_plan(settings.admin_database_url, tenant, plan)
            return {"Authorization": f"Bearer {mint_token(settings, tenant, f'{name}@example.com')}"}

        free_tenants = -(-per_plan // FREE_DOCUMENTS_PER_TENANT)
        free = [user(f"free-{i}", "free") for i in range(free_tenants)]
        pro = user("pro", "pro")
        enterprise = user("enterprise", "enterprise")
        with dev_stack(env, settings.gateway.jwks_url) as base:
            started = time.monotonic()
            backlog: dict[str, str] = {}  # document → plan

            async def upload_backlog() -> None:
                for i in range(per_plan):  # interleaved, so neither plan is older
                    free_ids, pro_ids = await asyncio.gather(
                        upload_all(base, free[i // FREE_DOCUMENTS_PER_TENANT], [files[2 * i]]),
                        upload_all(base, pro, [files[2 * i + 1]]),
                    )
                    backlog.update({free_ids[0]: "free", pro_ids[0]: "pro"})

            asyncio.run(upload_backlog())
            print(f"backlog: {per_plan} Free + {per_plan} Pro documents queued in {time.monotonic() - started:.0f} s")
            ids = list(backlog)
            ready_at: dict[str, float] = {}
            worker = [PYTHON, "-m", "worker", "--queues"]
            with psycopg.connect(admin_url, autocommit=True) as conn, contextlib.ExitStack() as workers:
                workers.enter_context(server([*worker, "enterprise"], env, None))
                # The dedicated worker is up (registered) before the shared one starts loading its model.
                while conn.execute("select count(*) from procrastinate.procrastinate_workers").fetchone() == (0,):
                    time.sleep(0.1)
                workers.enter_context(server([*worker, "shared"], env, None))
                while all(status == "queued" for status in statuses(conn, ids).values()):
                    time.sleep(0.05)
                t0 = time.monotonic()  # the shared worker has taken its first job
                enterprise_id: str | None = None
                enterprise_uploaded = enterprise_ready = 0.0
                waiting_at_enterprise = 0
                while len(ready_at) < len(ids) or (enterprise_id is not None and not enterprise_ready):
                    now = time.monotonic()
                    current = statuses(conn, ids + ([enterprise_id] if enterprise_id else []))
                    if "failed" in current.values():
                        raise RuntimeError("a document failed")
                    for document, status in current.items():
                        if status == "ready" and document in backlog and document not in ready_at:
                            ready_at[document] = now - t0
                    if enterprise_id is None and len(ready_at) >= ENTERPRISE_AFTER_READY:
                        enterprise_uploaded = time.monotonic()
                        enterprise_id = asyncio.run(upload_all(base, enterprise, [files[-1]]))[0]
                    elif enterprise_id is not None and not enterprise_ready and current.get(enterprise_id) == "ready":
                        enterprise_ready = time.monotonic()
                        waiting_at_enterprise = sum(1 for d in ids if current.get(d) == "queued")
                    if now - t0 > 1800:
                        raise TimeoutError("the backlog did not drain in 30 minutes")
                    time.sleep(0.1)
    times = {plan: [ready_at[d] for d, p in backlog.items() if p == plan] for plan in ("free", "pro")}
    free_p50, pro_p50 = statistics.median(times["free"]), statistics.median(times["pro"])
    drained = max(ready_at.values())
    enterprise_seconds = enterprise_ready - enterprise_uploaded
    waiting_share = 100 * waiting_at_enterprise / len(ids)
    print(f"backlog drained in {drained:.1f} s ({len(ids) / drained:.1f} documents/s on one shared worker)")
    for plan, values in times.items():
        print(
            f"  {plan:4s} time to ready: p50={statistics.median(values):.1f} s "
            f"p90={statistics.quantiles(values, n=10)[-1]:.1f} s last={max(values):.1f} s"
        )
    print(
        f"  enterprise (dedicated worker): upload->ready {enterprise_seconds:.2f} s, with {waiting_at_enterprise} "
        f"of the {len(ids)} backlog documents ({waiting_share:.0f}%) still queued on the shared pool"
    )
    print("target: free_over_pro >= 2 (2 cores shared with other work: indicative)")
    print(
        f"priority: free_over_pro={free_p50 / pro_p50:.2f} enterprise_dedicated_s={enterprise_seconds:.2f} "
        f"(free_p50={free_p50:.1f} pro_p50={pro_p50:.1f} backlog_waiting_at_enterprise={waiting_share:.0f}%)"
    )


if __name__ == "__main__":
    main()
