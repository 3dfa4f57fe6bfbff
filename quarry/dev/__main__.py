"""Development commands (see `make help`).

    python -m quarry.dev db [--fresh]      create + migrate the local database
    python -m quarry.dev token EMAIL       print a dev access token for EMAIL
    python -m quarry.dev plan EMAIL PLAN   put EMAIL on free, pro or enterprise
    python -m quarry.dev run               database, dev auth server, gateway
    python -m quarry.dev authserver        only the dev JWKS server

All of them refuse to run with QUARRY_ENV=production.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from urllib.parse import urlsplit

import httpx
import psycopg

from quarry.dev.database import DatabaseSetupError, prepare_database
from quarry.dev.keys import load_or_create_key, mint_service_role_key, mint_token
from quarry.dev.settings import DevModeRefused, DevSettings
from quarry.dev.supervisor import Supervisor
from quarry.dev.users import PLANS, SUBSCRIPTION_STATUSES, ensure_user, set_plan
from quarry.dev.webhook import webhook_command, webhook_env
from quarry.settings import SettingsError

# The local Stripe's key and signing secret: dev only, never a real Stripe's.
DEV_STRIPE_KEY = "sk_test_quarry_local"
DEV_WEBHOOK_SECRET = "whsec_quarry_local"  # noqa: S105 (a dev-only constant)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def cmd_db(settings: DevSettings, args: argparse.Namespace) -> int:
    url = prepare_database(settings.admin_database_url, database_name(settings.admin_database_url), fresh=args.fresh)
    print(f"database ready: {database_name(url)}", file=sys.stderr)
    return 0


def cmd_token(settings: DevSettings, args: argparse.Namespace) -> int:
    try:
        user_id = ensure_user(settings.admin_database_url, args.email)
    except psycopg.OperationalError:
        name = database_name(settings.admin_database_url)
        print(f"error: cannot reach the dev database {name!r}; run `make dev` (or `make db`) first", file=sys.stderr)
        return 2
    print(mint_token(settings, user_id, args.email, ttl_seconds=args.ttl))
    return 0


def cmd_plan(settings: DevSettings, args: argparse.Namespace) -> int:
    try:
        user_id = ensure_user(settings.admin_database_url, args.email)
        set_plan(settings.admin_database_url, user_id, args.plan, args.status)
    except psycopg.OperationalError:
        name = database_name(settings.admin_database_url)
        print(f"error: cannot reach the dev database {name!r}; run `make dev` (or `make db`) first", file=sys.stderr)
        return 2
    print(f"{args.email}: {args.plan}" + ("" if args.plan == "free" else f" ({args.status})"), file=sys.stderr)
    return 0


def cmd_authserver(settings: DevSettings, args: argparse.Namespace) -> int:
    import uvicorn

    from quarry.dev.authserver import create_auth_app

    parts = urlsplit(settings.gateway.supabase_url)
    uvicorn.run(
        create_auth_app(settings),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 54321,
        log_level="warning",
    )
    return 0


def _wait_ready(url: str, supervisor: Supervisor, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.poll()
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def local_billing(settings: DevSettings, supervisor: Supervisor, gateway_url: str) -> tuple[dict[str, str], str]:
    """No STRIPE_SECRET_KEY: the local Stripe and the stripe-webhook function under Deno, and the
    billing settings that point the gateway and the worker at them."""
    python = sys.executable
    stripe_port = int(os.environ.get("DEV_STRIPE_PORT", "12111"))
    webhook_port = int(os.environ.get("DEV_WEBHOOK_PORT", "54331"))
    stripe_url = f"http://127.0.0.1:{stripe_port}"
    webhook_url = f"http://127.0.0.1:{webhook_port}/stripe-webhook"
    supervisor.add(
        "local Stripe",
        [
            python,
            "-m",
            "tests.py.support.fake_stripe",
            "--port",
            str(stripe_port),
            "--webhook-url",
            webhook_url,
            "--api-key",
            DEV_STRIPE_KEY,
            "--webhook-secret",
            DEV_WEBHOOK_SECRET,
        ],
    )
    database = database_name(settings.admin_database_url)
    supervisor.add(
        "stripe-webhook",
        webhook_command(),
        env=webhook_env(
            database_url=f"postgresql://quarry_webhook@127.0.0.1:5432/{database}",
            stripe_secret_key=DEV_STRIPE_KEY,
            webhook_secret=DEV_WEBHOOK_SECRET,
            stripe_api_base=stripe_url,
            port=webhook_port,
        ),
    )
    env = {
        "STRIPE_SECRET_KEY": DEV_STRIPE_KEY,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_PRICE_PRO": "price_pro_test",
        "STRIPE_PRICE_ENTERPRISE": "price_enterprise_test",
        "BILLING_SUCCESS_URL": f"{gateway_url}/api/billing/usage",
        "BILLING_CANCEL_URL": f"{gateway_url}/api/me",
        "BILLING_RETURN_URL": f"{gateway_url}/api/billing/usage",
    }
    return env, stripe_url


def cmd_run(settings: DevSettings, args: argparse.Namespace) -> int:
    cmd_db(settings, argparse.Namespace(fresh=False))
    load_or_create_key(settings)
    python = sys.executable
    gateway_url = f"http://{args.host}:{args.port}"
    gateway = [python, "-m", "uvicorn", "gateway.app:create_app", "--factory"]
    supervisor = Supervisor()
    billing_env: dict[str, str] | None = None
    stripe_line = "  billing      Stripe (STRIPE_SECRET_KEY is set)"
    if settings.gateway.billing is None:
        billing_env, stripe_url = local_billing(settings, supervisor, gateway_url)
        stripe_line = (
            f"  billing      local Stripe {stripe_url} and the stripe-webhook function (Deno); open a checkout URL"
            " to pay, a portal URL to change plan, fail a payment or cancel"
        )
    supervisor.add("dev auth server", [python, "-m", "quarry.dev", "authserver"])
    supervisor.add(
        "gateway", [*gateway, "--host", args.host, "--port", str(args.port), "--no-access-log"], env=billing_env
    )
    # The worker deletes auth users through the dev auth server's admin endpoint, with this key.
    worker_env = {**(billing_env or {}), "SUPABASE_SERVICE_ROLE_KEY": mint_service_role_key(settings)}
    supervisor.add("worker", [python, "-m", "worker"], env=worker_env)

    mail_line = "through SMTP_URL" if settings.gateway.mail.url else "printed here (export links, deletion receipts)"

    def on_sigterm(*_: object) -> None:
        supervisor.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if not _wait_ready(f"{gateway_url}/readyz", supervisor):
            print("the gateway did not become ready; see the output above", file=sys.stderr)
            return 1
        print(
            f"""
Quarry is running.
  gateway      {gateway_url}   (health: {gateway_url}/readyz, API: {gateway_url}/openapi.json)
  dev auth     {settings.gateway.supabase_url}   (JWKS of the dev signing key in {settings.dev_dir})
  worker       ingest, Drive, export and deletion jobs; files and index under {settings.gateway.data_dir}
  mail         {mail_line}
{stripe_line}

Get a token and call the API from another terminal:
  TOKEN=$(make -s token USER=alice@example.com)
  curl -H "Authorization: Bearer $TOKEN" {gateway_url}/api/me
  curl -H "Authorization: Bearer $TOKEN" -F file=@README.md {gateway_url}/api/documents
  curl -H "Authorization: Bearer $TOKEN" {gateway_url}/api/documents
  curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"plan": "pro"}}' \\
       {gateway_url}/api/billing/checkout        # open the url to pay; then /api/me says pro
  curl -H "Authorization: Bearer $TOKEN" {gateway_url}/api/billing/portal   # Enterprise, past due, cancel

A process that dies is started again (with a growing pause). Ctrl-C stops everything.""",
            flush=True,
        )
        while True:
            supervisor.poll()
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        supervisor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quarry.dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="create and migrate the local database")
    db.add_argument("--fresh", action="store_true", help="drop the database first")
    db.set_defaults(handler=cmd_db)
    token = commands.add_parser("token", help="print a dev access token (creates the user if needed)")
    token.add_argument("email")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(handler=cmd_token)
    plan = commands.add_parser("plan", help="put a user on a plan, as the billing webhook would")
    plan.add_argument("email")
    plan.add_argument("plan", choices=PLANS)
    plan.add_argument("--status", choices=SUBSCRIPTION_STATUSES, default="active")
    plan.set_defaults(handler=cmd_plan)
    run = commands.add_parser("run", help="run the dev auth server and the gateway")
    run.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
    run.set_defaults(handler=cmd_run)
    authserver = commands.add_parser("authserver", help="serve the dev JWKS only")
    authserver.set_defaults(handler=cmd_authserver)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(DevSettings.from_env(), args))
    except (DevModeRefused, SettingsError, DatabaseSetupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
