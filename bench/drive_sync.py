"""Drive sync throughput against uploads, and the cost of an incremental sync, with the local Google.

Starts its own database (quarry_bench_drive), the local Google of the tests
(tests/py/support/google.py, which the official clients talk to unchanged),
the dev auth server, a gateway and a worker, connects a user through the
OAuth endpoints, then:

1. upload: 1,000 small text files through POST /api/documents (8 at a time),
   files/s from the first upload until every one is `ready`;
2. drive: 1,000 such files in a Drive folder (three levels of subfolders),
   one first sync, files/s from the trigger until every document is `ready`;
   rounds run upload, drive, drive, upload (each on new files), so that
   neither path is always the one measured on the smaller index or the
   quieter machine; the ratio of the two paths' mean files/s is the target
   (>= 0.9);
3. incremental: a folder of 10,000 files is crawled once (they are Google
   Forms, skipped with a reason, so the crawl does not ingest 10,000
   documents: the file map still holds 10,000 rows), then 10 changes are made
   (new, modified, renamed, trashed text files) and the time from the trigger
   to the run's end is measured; it must not re-list the folder (target <= 2 s).

Last line: drive_sync: ratio=… first_files_s=… incremental_s=…
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from urllib.parse import urlsplit

import httpx
import psycopg
from _support import PYTHON, REPO_ROOT, dev_env, dev_stack, server, upload_all

sys.path.insert(0, str(REPO_ROOT))

from quarry.dev.database import prepare_database, with_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan
from quarry.drive.crypto import new_key_entry
from tests.py.support.google import FakeGoogle

DATABASE = "quarry_bench_drive"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
FILES = 1000
BIG_FOLDER = 10_000
UPLOAD_CONCURRENCY = 8


def text(n: int, kind: str) -> bytes:
    return f"{kind} file {n}: notes on granite, marble and slate quarries, batch {n % 17}.\n".encode()


def wait_ready(admin_url: str, where: str, params: tuple[object, ...], expected: int, timeout: float = 1800) -> float:
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            counts = "count(*) filter (where status = 'ready'), count(*) filter (where status = 'failed')"
            statement = f"select {counts} from app.documents where {where}"  # noqa: S608 (the bench's constants)
            row = conn.execute(statement, params).fetchone()
            assert row is not None
            if row[1]:
                raise RuntimeError(f"{row[1]} document(s) failed")
            if row[0] >= expected:
                return time.monotonic()
            time.sleep(0.2)
    raise TimeoutError("documents did not become ready")


def connect(base: str, headers: dict[str, str], google: FakeGoogle) -> None:
    """As a browser: the authorization's cookie goes back with the callback (one client, one cookie jar)."""
    with httpx.Client(base_url=base) as browser:
        url = browser.post("/api/drive/authorize", headers=headers).raise_for_status().json()["url"]
        back = urlsplit(google.consent_redirect(url)).query
        response = browser.get(f"/api/drive/callback?{back}", follow_redirects=False)
    if "drive=connected" not in response.headers.get("location", ""):
        raise RuntimeError(f"connecting Drive failed: {response.status_code} {response.headers.get('location')}")


def sync(base: str, headers: dict[str, str], config_id: str, poll: float) -> tuple[float, dict[str, object]]:
    """Seconds from the trigger to the run's end (polled every `poll` seconds), and the run.

    One client for the whole wait: `httpx.get` builds a client, and an SSL context, per call
    (~15 ms of CPU), which at 20 polls a second took a third of a core from the sync it measured."""
    started = time.monotonic()
    with httpx.Client(base_url=base, headers=headers) as client:
        run = client.post(f"/api/drive/sync/{config_id}/trigger").raise_for_status().json()
        while True:
            current: dict[str, object] = client.get(f"/api/drive/runs/{run['id']}").json()
            if current["state"] not in ("queued", "running"):
                if current["state"] != "succeeded":
                    raise RuntimeError(f"the sync ended {current['state']}: {current.get('error')}")
                return time.monotonic() - started, current
            time.sleep(poll)


def add_config(base: str, headers: dict[str, str], folder_id: str) -> str:
    response = httpx.post(f"{base}/api/drive/configs", headers=headers, json={"folder_id": folder_id})
    return str(response.raise_for_status().json()["id"])


def measure_upload(
    base: str, headers: dict[str, str], admin_url: str, google: FakeGoogle, number: int
) -> tuple[float, str]:
    """Files/s of FILES new files uploaded through the API, until every one is ready."""
    files = [(f"upload-{number}-{n}.txt", text(n, f"upload {number}")) for n in range(FILES)]
    started = time.monotonic()
    ids = asyncio.run(upload_all(base, headers, files, UPLOAD_CONCURRENCY))
    return FILES / (wait_ready(admin_url, "id = any(%s::uuid[])", (ids,), FILES) - started), ""


def measure_drive(
    base: str, headers: dict[str, str], admin_url: str, google: FakeGoogle, number: int
) -> tuple[float, str]:
    """Files/s of a first sync of a new folder of FILES files (three levels of subfolders), until every one is ready."""
    root = google.folder(f"Bench {number}")
    levels = [root.id]
    for depth in range(3):
        levels.append(google.folder(f"level-{depth}", levels[-1]).id)
    for n in range(FILES):
        google.add(f"drive-{number}-{n}.txt", "text/plain", levels[n % len(levels)], text(n, f"drive {number}"))
    config_id = add_config(base, headers, root.id)
    started = time.monotonic()
    _, run = sync(base, headers, config_id, poll=0.2)
    finished = wait_ready(
        admin_url, "id in (select document_id from app.drive_files where folder_id = %s)", (config_id,), FILES
    )
    return FILES / (finished - started), f" ({run})"


def main() -> None:
    google = FakeGoogle().start()
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            env = {
                **dev_env(DATABASE, f"{workdir}/dev", f"{workdir}/data"),
                **google.env(),
                "DRIVE_TOKEN_KEYS": new_key_entry("bench"),
                "DRIVE_PAGE_SIZE": "100",
                # As many files in flight as the upload baseline has uploads (which the gateway
                # would otherwise cap at UPLOADS_IN_FLIGHT_PER_TENANT's default 4 per tenant).
                "DRIVE_SYNC_CONCURRENCY": str(UPLOAD_CONCURRENCY),
                "UPLOADS_IN_FLIGHT_PER_TENANT": str(UPLOAD_CONCURRENCY),
            }
            settings = DevSettings.from_env(env)
            user = ensure_user(settings.admin_database_url, "bench@example.com")
            set_plan(settings.admin_database_url, user, "enterprise")
            token = mint_token(settings, user, "bench@example.com")
            headers = {"Authorization": f"Bearer {token}"}
            with dev_stack(env, settings.gateway.jwks_url) as base, server([PYTHON, "-m", "worker"], env, None):
                connect(base, headers, google)
                warm = asyncio.run(upload_all(base, headers, [("warm.txt", b"Warm-up document about granite.")]))
                wait_ready(admin_url, "id = any(%s::uuid[])", (warm,), 1, timeout=300)

                rates: dict[str, list[float]] = {"upload": [], "drive": []}
                for number, path in enumerate(("upload", "drive", "drive", "upload")):
                    measure = measure_upload if path == "upload" else measure_drive
                    rate, detail = measure(base, headers, admin_url, google, number)
                    rates[path].append(rate)
                    print(f"{path}: {FILES} files in {FILES / rate:.1f} s = {rate:.1f} files/s{detail}")
                upload_s = sum(rates["upload"]) / len(rates["upload"])
                drive_s = sum(rates["drive"]) / len(rates["drive"])

                big = google.folder("Big")
                for n in range(BIG_FOLDER - 10):
                    google.add(f"form-{n}", "application/vnd.google-apps.form", big.id)
                edited = [google.add(f"big-{n}.txt", "text/plain", big.id, text(n, "big")) for n in range(10)]
                big_config = add_config(base, headers, big.id)
                crawl_s, _ = sync(base, headers, big_config, poll=0.2)
                print(f"crawl of a {BIG_FOLDER}-file folder: {crawl_s:.1f} s")
                for file in edited[:4]:
                    google.modify(file.id, text(99, "modified"))
                for n in range(3):
                    google.add(f"new-{n}.txt", "text/plain", big.id, text(n, "new"))
                google.trash(edited[4].id)
                google.trash(edited[5].id)
                google.modify(edited[6].id, name="renamed.txt")
                lists = google.count("GET", "/drive/v3/files?")
                incremental_s, run = sync(base, headers, big_config, poll=0.05)
                relisted = google.count("GET", "/drive/v3/files?") - lists
                print(
                    f"incremental: 10 changes in {incremental_s:.2f} s, folder listings during it: {relisted} ({run})"
                )
    finally:
        google.stop()
    print(f"drive_sync: ratio={drive_s / upload_s:.2f} first_files_s={drive_s:.1f} incremental_s={incremental_s:.2f}")


if __name__ == "__main__":
    main()
