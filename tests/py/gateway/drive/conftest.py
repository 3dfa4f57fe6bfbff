"""Drive tests: the local Google, gateways and a worker pointed at it, and connecting a tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.google import FakeGoogle
from tests.py.support.processes import running_worker
from tests.py.support.tokens import JwksServer, TokenFactory

APP_URL = "https://app.example/settings/drive"
REDIRECT_URI = "https://api.example/api/drive/callback"


def drive_env(google: FakeGoogle, **overrides: str) -> dict[str, str]:
    return {
        **google.env(),
        "GOOGLE_OAUTH_REDIRECT_URI": REDIRECT_URI,
        "DRIVE_APP_URL": APP_URL,
        "DRIVE_BACKOFF_BASE_MS": "20",
        "DRIVE_MAX_BACKOFF_SECONDS": "2",
        "RATE_LIMITS": "off",
        **overrides,
    }


@pytest.fixture
def drive_gateway(make_gateway: GatewayFactory, google: FakeGoogle) -> TestClient:
    return make_gateway(**drive_env(google))


@pytest.fixture(scope="module")
def worker_log(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    data_dir: Path,
    google: FakeGoogle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """The real worker, pointed at the local Google; yields its log."""
    log = tmp_path_factory.mktemp("drive-worker") / "worker.log"
    with running_worker(gateway_env(database, jwks_server, data_dir, **drive_env(google)), log) as process:
        yield log
        assert process.poll() is None, log.read_text()[-5000:]


def new_tenant(admin: Admin, client: TestClient, tokens: TokenFactory, plan: str = "pro") -> Api:
    tenant = admin.new_user()
    admin.subscribe(tenant, plan, "active")
    return Api(client, tokens.es256(tenant), tenant)


def authorize(api: Api) -> str:
    response = api.client.post("/api/drive/authorize", headers=api.headers)
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


def callback(api: Api, redirect: str, *, authenticated: bool = False) -> tuple[int, dict[str, list[str]]]:
    """Follow Google's redirect back to our callback: (status, the query of where it sends the browser)."""
    query = urlsplit(redirect).query
    headers = api.headers if authenticated else {}
    response = api.client.get(f"/api/drive/callback?{query}", headers=headers, follow_redirects=False)
    if response.status_code != 303:
        return response.status_code, {}
    location = response.headers["location"]
    assert location.startswith(APP_URL), location
    return 303, parse_qs(urlsplit(location).query)


def connect(api: Api, google: FakeGoogle) -> None:
    status, outcome = callback(api, google.consent_redirect(authorize(api)))
    assert (status, outcome) == (303, {"drive": ["connected"]})
