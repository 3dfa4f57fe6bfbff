"""`make dev` and `make token` end to end, as a newcomer runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from quarry.dev.database import with_database
from quarry.paths import REPO_ROOT
from tests.py.support.database import ADMIN_SERVER_URL, TEST_DATABASE
from tests.py.support.net import free_port

pytestmark = pytest.mark.slow

DEV_TEST_DATABASE = f"{TEST_DATABASE}_dev"


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    with psycopg.connect(ADMIN_SERVER_URL, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DEV_TEST_DATABASE} with (force)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "DATABASE_URL", "QUARRY_", "STRIPE_"))}
    env.update(
        QUARRY_DB_NAME=DEV_TEST_DATABASE,
        QUARRY_DEV_DIR=str(tmp_path / "dev"),
        QUARRY_DATA_DIR=str(tmp_path / "data"),
        SUPABASE_URL=f"http://127.0.0.1:{free_port()}",
        GATEWAY_PORT=str(free_port()),
        DEV_STRIPE_PORT=str(free_port()),
        DEV_WEBHOOK_PORT=str(free_port()),
    )
    return env


@contextmanager
def make_dev(env: dict[str, str], printed: list[str] | None = None) -> Iterator[str]:
    process = subprocess.Popen(
        ["make", "-s", "dev"],
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("make dev did not become ready")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    if printed is not None:
        printed.append(output)
    assert "TOKEN=$(make -s token USER=alice@example.com)" in output
    assert f'curl -H "Authorization: Bearer $TOKEN" {base}/api/me' in output


def make_token(env: dict[str, str], email: str) -> str:
    result = subprocess.run(
        ["make", "-s", "token", f"USER={email}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_make_dev_serves_readyz_and_me_twice_over(dev_env: dict[str, str]) -> None:
    with make_dev(dev_env) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        token = make_token(dev_env, "alice@example.com")
        auth = {"Authorization": f"Bearer {token}"}
        first = httpx.get(f"{base}/api/me", headers=auth)
        assert first.status_code == 200, first.text
        # The README's upload line: the worker that make dev started takes it to ready.
        readme = (REPO_ROOT / "README.md").read_bytes()
        upload = httpx.post(f"{base}/api/documents", headers=auth, files={"file": ("README.md", readme)})
        assert upload.status_code == 202, upload.text
        document_url = f"{base}/api/documents/{upload.json()['id']}"
        deadline = time.monotonic() + 90
        # Every 2 s: Free allows 50 requests an hour, and a slow machine must not poll past them.
        while httpx.get(document_url, headers=auth).json()["status"] not in ("ready", "failed"):
            assert time.monotonic() < deadline, "the upload did not finish"
            time.sleep(2.0)
        assert httpx.get(document_url, headers=auth).json()["status"] == "ready"
        # Billing on the laptop: the local Stripe and the webhook function, Free → Pro → Enterprise → canceled.
        plans = [httpx.get(f"{base}/api/me", headers=auth).json()["plan"]]
        checkout = httpx.post(f"{base}/api/billing/checkout", headers=auth, json={"plan": "pro"})
        assert checkout.status_code == 200, checkout.text
        assert httpx.get(checkout.json()["url"]).status_code == 303  # "paid": back to the success URL
        plans.append(httpx.get(f"{base}/api/me", headers=auth).json()["plan"])
        portal = httpx.get(f"{base}/api/billing/portal", headers=auth).json()["url"]
        assert httpx.get(f"{portal}/price/price_enterprise_test").status_code == 303
        plans.append(httpx.get(f"{base}/api/me", headers=auth).json()["plan"])
        assert httpx.get(f"{portal}/cancel").status_code == 303
        plans.append(httpx.get(f"{base}/api/me", headers=auth).json()["plan"])
        assert plans == ["free", "pro", "enterprise", "free"]
    admin = with_database(ADMIN_SERVER_URL, DEV_TEST_DATABASE)
    with psycopg.connect(admin) as conn:
        row = conn.execute("select id from auth.users where email = 'alice@example.com'").fetchone()
    assert row is not None
    assert first.json() == {"tenant_id": str(row[0]), "email": "alice@example.com", "plan": "free"}

    # Idempotent: a second run reuses the database, the user and the signing key.
    printed: list[str] = []
    with make_dev(dev_env, printed) as base:
        again = httpx.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"})
        assert again.json() == first.json()
        assert make_token(dev_env, "alice@example.com") != token  # a new token, same user
        plan = subprocess.run(
            ["make", "-s", "plan", "USER=alice@example.com", "PLAN=pro"],
            cwd=REPO_ROOT,
            env=dev_env,
            capture_output=True,
            text=True,
        )
        assert plan.returncode == 0, plan.stderr
        upgraded = httpx.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"})
        assert upgraded.json()["plan"] == "pro", "the next request sees the new plan"
        assert upgraded.headers["RateLimit-Limit"] == "500"
        # Export and account deletion on the laptop: mail is printed; the dev auth server deletes the user.
        bob = {"Authorization": f"Bearer {make_token(dev_env, 'bob@example.com')}"}
        export = httpx.post(f"{base}/api/export", headers=bob)
        assert export.status_code == 202, export.text
        deadline = time.monotonic() + 90
        while httpx.get(f"{base}/api/export/{export.json()['id']}", headers=bob).json()["status"] != "ready":
            assert time.monotonic() < deadline, "the export did not finish"
            time.sleep(2.0)
        deleting = httpx.request("DELETE", f"{base}/api/account", headers=bob, json={"confirm": "bob@example.com"})
        assert deleting.status_code == 202, deleting.text
        while httpx.get(f"{base}/api/account/deletion", headers=bob).status_code != 401:
            assert time.monotonic() < deadline + 60, "the account was not deleted"
            time.sleep(2.0)
    assert "Subject: Your Quarry data export is ready" in printed[0]
    assert "Subject: Your Quarry account has been deleted" in printed[0]
    with psycopg.connect(admin) as conn:
        assert conn.execute("select count(*) from auth.users where email = 'bob@example.com'").fetchone() == (0,)
    assert (Path(dev_env["QUARRY_DEV_DIR"]) / "jwt-es256-private.pem").stat().st_mode & 0o077 == 0


def test_make_token_needs_a_user(dev_env: dict[str, str]) -> None:
    result = subprocess.run(["make", "-s", "token"], cwd=REPO_ROOT, env=dev_env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "usage: make -s token USER=" in result.stderr


@pytest.mark.parametrize(
    "command", [["token", "eve@example.com"], ["plan", "eve@example.com", "pro"], ["authserver"], ["run"], ["db"]]
)
def test_dev_commands_refuse_production(dev_env: dict[str, str], command: list[str]) -> None:
    env = {
        **dev_env,
        "QUARRY_ENV": "production",
        "SUPABASE_URL": "https://project.supabase.co",
        "DATABASE_URL": "postgresql://quarry_gateway@127.0.0.1:5432/quarry_devtest",
        "ADMIN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/quarry_devtest",
    }
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "quarry.dev", *command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "dev signing is disabled when QUARRY_ENV=production" in result.stderr
    assert not (Path(dev_env["QUARRY_DEV_DIR"]) / "jwt-es256-private.pem").exists()
