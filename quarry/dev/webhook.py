"""The stripe-webhook Edge Function as a local process (dev mode, tests, the benchmark).

Supabase runs the function in its Edge Runtime; here the same code runs
under Deno from PyPI, with the modules deno.lock pins, from Deno's cache
(`make setup` filled it): `--cached-only`, so nothing downloads at run time.
"""

from __future__ import annotations

from collections.abc import Mapping

from quarry.paths import DENO, WEBHOOK_DIR


def webhook_command() -> list[str]:
    return [
        str(DENO),
        "run",
        "--frozen",
        "--cached-only",
        "--no-prompt",
        "--config",
        str(WEBHOOK_DIR / "deno.json"),
        "--allow-net",
        "--allow-env",
        str(WEBHOOK_DIR / "index.ts"),
    ]


def webhook_env(
    *,
    database_url: str,
    stripe_secret_key: str,
    webhook_secret: str,
    port: int,
    stripe_api_base: str | None = None,
    previous_webhook_secret: str | None = None,
) -> Mapping[str, str]:
    env = {
        "SUPABASE_DB_URL": database_url,
        "STRIPE_SECRET_KEY": stripe_secret_key,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "PORT": str(port),
        "DENO_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    if stripe_api_base:
        env["STRIPE_API_BASE"] = stripe_api_base
    if previous_webhook_secret:
        env["STRIPE_WEBHOOK_SECRET_PREVIOUS"] = previous_webhook_secret
    return env
