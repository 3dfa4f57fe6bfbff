"""The API does exactly what /openapi.json says: `schemathesis run --checks all` finds nothing.

Runs the real CLI, with the repository's schemathesis.toml (its five
documented exclusions and nothing else), against a real gateway process on
the test database, as a fresh Enterprise user (so that quotas refuse
nothing). Every phase runs: coverage, fuzzing and stateful (links between
operations, so a created key is revoked and a deleted document is gone).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from quarry.paths import REPO_ROOT
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.fake_stripe import FakeStripe
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway
from tests.py.support.tokens import JwksServer, TokenFactory

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 60


def test_schemathesis_finds_no_failures(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    admin: Admin,
    tokens: TokenFactory,
    tmp_path: Path,
    fake_stripe: FakeStripe,
) -> None:
    tenant = admin.new_user()
    admin.subscribe(tenant, "enterprise", "active")
    token = tokens.es256(tenant)
    # The fuzzer fails authentication on purpose, hundreds of times from one address: over the throttle.
    env = gateway_env(
        database, jwks_server, tmp_path / "data", AUTH_FAILURES_PER_ADDRESS="100000", **fake_stripe.gateway_env()
    )
    with running_gateway(env, free_port(), tmp_path / "gateway.log") as base:
        assert httpx.get(f"{base}/openapi.json").status_code == 200
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--header",
                f"Authorization: Bearer {token}",
                "--no-color",
                f"{base}/openapi.json",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    assert "Configuration:    " + str(REPO_ROOT / "schemathesis.toml") in output, "the exclusions file was not used"
    assert "0 failures" in output or " passed" in output, output[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, f"the {phase} phase did not run and pass:\n{output[-3000:]}"
