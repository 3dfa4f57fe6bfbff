"""Billing by hand, as the worker's login role:

    python -m quarry.billing reconcile          re-fetch every customer's subscriptions and repair drift
    python -m quarry.billing replay [EVENT_ID]  apply the failed events (or one) again

The worker runs `reconcile` every hour (`billing:reconcile`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from quarry.billing.checkout import BillingService
from quarry.billing.reconcile import reconcile_all, replay_failed
from quarry.db import TenantDatabase
from quarry.settings import Settings, SettingsError


async def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.worker_database_url is None:
        raise SettingsError("WORKER_DATABASE_URL must be set")
    if settings.billing is None:
        raise SettingsError("STRIPE_SECRET_KEY (and the billing settings) must be set")
    database = TenantDatabase.connect(settings.tenant_database_url, settings.worker_database_url, min_size=1)
    await database.open(wait=True)
    billing = BillingService(database, settings.billing)
    try:
        if args.command == "reconcile":
            print((await reconcile_all(database, billing)).summary())
        else:
            print(f"{await replay_failed(database, billing, args.event)} event(s) replayed")
    finally:
        await billing.aclose()
        await database.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quarry.billing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("reconcile", help="repair drift from Stripe")
    replay = commands.add_parser("replay", help="apply failed events again")
    replay.add_argument("event", nargs="?", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
