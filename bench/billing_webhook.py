"""Stripe webhook latency and plan-change lag: signed events through the real stripe-webhook
Edge Function (Deno, re-fetching each subscription from the local Stripe, writing to Postgres as
quarry_webhook), then the first gateway request after its 200.

Starts its own database (quarry_bench_billing), the local Stripe (in this process), the function,
the dev JWKS server and one gateway.  USERS tenants check out through the gateway; then EVENTS
times one tenant's plan flips in Stripe (Pro ↔ Enterprise) and its `customer.subscription.updated`
is delivered, signed; the time to the webhook's 200 is a sample, and GET /api/me right after must
already show the new plan (`lag_requests` counts the requests that did not).
Target: webhook p50 <= 50 ms, lag_requests = 0.
"""

from __future__ import annotations

import sys
import tempfile
import time

import httpx
from _support import REPO_ROOT, dev_env, dev_stack, free_port, percentile, server

sys.path.insert(0, str(REPO_ROOT))  # the local Stripe lives in the test support code

from quarry.dev.database import prepare_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user
from quarry.dev.webhook import webhook_command, webhook_env
from tests.py.support.fake_stripe import FakeStripe, sign

DATABASE = "quarry_bench_billing"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
USERS = 10
WARMUP_EVENTS = 30
EVENTS = 300
PRICES = {"pro": "price_pro_test", "enterprise": "price_enterprise_test"}


def wait_for_webhook(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 405:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the stripe-webhook function did not start")


def main() -> None:
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    fake = FakeStripe().serve()
    webhook_port = free_port()
    fake.webhook_url = f"http://127.0.0.1:{webhook_port}/stripe-webhook"
    function_env = webhook_env(
        database_url=f"postgresql://quarry_webhook@127.0.0.1:5432/{DATABASE}",
        stripe_secret_key=fake.api_key,
        webhook_secret=fake.webhook_secret,
        stripe_api_base=fake.url,
        port=webhook_port,
    )
    with tempfile.TemporaryDirectory() as dev_dir, tempfile.TemporaryDirectory() as data_dir:
        env = {**dev_env(DATABASE, dev_dir, data_dir), **fake.gateway_env()}
        settings = DevSettings.from_env(env)
        with (
            server(webhook_command(), dict(function_env), None),
            dev_stack(env, settings.gateway.jwks_url) as base,
            httpx.Client(base_url=base, timeout=30) as gateway,
            httpx.Client(timeout=30) as stripe_side,
        ):
            wait_for_webhook(fake.webhook_url)
            tenants = []
            for index in range(USERS):
                email = f"bench{index}@example.com"
                user = ensure_user(settings.admin_database_url, email)
                auth = {"Authorization": f"Bearer {mint_token(settings, user, email)}"}
                response = gateway.post("/api/billing/checkout", headers=auth, json={"plan": "pro"})
                response.raise_for_status()
                session = response.json()["url"].rsplit("/", 1)[1]
                fake.complete_checkout(session)
                tenants.append((auth, str(fake.sessions[session]["subscription"]), "pro"))

            samples: list[float] = []
            lag_requests = 0
            for step in range(WARMUP_EVENTS + EVENTS):
                auth, subscription, plan = tenants[step % USERS]
                plan = "enterprise" if plan == "pro" else "pro"
                tenants[step % USERS] = (auth, subscription, plan)
                (event,) = fake.change_price(subscription, PRICES[plan], deliver=False)
                payload = event.payload()
                headers = {"Stripe-Signature": sign(payload, fake.webhook_secret), "Content-Type": "application/json"}
                started = time.perf_counter()
                response = stripe_side.post(fake.webhook_url, content=payload, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"the webhook answered {response.status_code}: {response.text}")
                seen = gateway.get("/api/me", headers=auth).json()["plan"]
                while seen != plan:
                    lag_requests += 1
                    if lag_requests > 1000:
                        raise RuntimeError("the gateway never saw the new plan")
                    seen = gateway.get("/api/me", headers=auth).json()["plan"]
                if step >= WARMUP_EVENTS:
                    samples.append(elapsed)
    fake.stop()
    print(
        f"billing_webhook: p50={percentile(samples, 0.5):.1f} p99={percentile(samples, 0.99):.1f} ms"
        f" lag_requests={lag_requests} events={len(samples)}"
    )


if __name__ == "__main__":
    main()
