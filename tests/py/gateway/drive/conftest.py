"""Drive tests: one local Google, one gateway and one worker for the whole package, and connecting a tenant.

Starting a worker (the model, the parse children) costs seconds, so the
package shares one; the crash test kills it and starts the next one itself.
Every test makes its own tenants and folders, so sharing changes nothing a
test looks at; what a test changes in the local Google's behaviour (faults,
consent, page size) it sets back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from quarry.paths import REPO_ROOT
from quarry.settings import Settings
from tests.py.support.admin import Admin
from tests.py.support.api import Api
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.google import FakeGoogle
from tests.py.support.processes import stop
from tests.py.support.tokens import JwksServer, TokenFactory

APP_URL = "https://app.example/settings/drive"
REDIRECT_URI = "https://api.example/api/drive/callback"
# The browser-binding cookie is Secure (the callback is https), so the test client speaks https too.
GATEWAY_URL = "https://testserver"


def drive_env(google: FakeGoogle, **overrides: str) -> dict[str, str]:
    return {
        **google.env(),
        "GOOGLE_OAUTH_REDIRECT_URI": REDIRECT_URI,
        "DRIVE_APP_URL": APP_URL,
        "DRIVE_BACKOFF_BASE_MS": "20",
        "DRIVE_MAX_BACKOFF_SECONDS": "2",
        "RATE_LIMITS": "off",
        # More ingest jobs in flight batch the model better (the suite's default is 4).
        "WORKER_CONCURRENCY": "16",
        "DRIVE_SYNC_CONCURRENCY": "8",
        **overrides,
    }


@pytest.fixture(scope="package")
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle().start()
    yield fake
    fake.stop()


# Everything that could carry a token in this process (the gateway runs here), at its most talkative.
VERBOSE_LOGGERS = ("quarry", "gateway", "google", "googleapiclient", "google_auth_httplib2", "httplib2", "httpx")


@pytest.fixture(scope="package")
def gateway_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The in-process gateway's log, at DEBUG, for the package (the token grep reads it)."""
    path = tmp_path_factory.mktemp("drive-gateway") / "gateway.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in VERBOSE_LOGGERS}
    root.addHandler(handler)
    for name in VERBOSE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="package")
def drive_gateway(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, google: FakeGoogle, gateway_log: Path
) -> Iterator[TestClient]:
    settings = Settings.from_env(gateway_env(database, jwks_server, data_dir, **drive_env(google)))
    with TestClient(create_app(settings), base_url=GATEWAY_URL, raise_server_exceptions=False) as client:
        yield client


@dataclass
class DriveWorker:
    """The real worker (`python -m worker`) pointed at the local Google: started, killed, started again."""

    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-5000:]


@pytest.fixture(scope="package")
def drive_worker(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    data_dir: Path,
    google: FakeGoogle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DriveWorker]:
    log = tmp_path_factory.mktemp("drive-worker") / "worker.log"
    # At DEBUG, so that the token grep also reads what the libraries say when asked to say everything.
    worker = DriveWorker(gateway_env(database, jwks_server, data_dir, **drive_env(google), LOG_LEVEL="DEBUG"), log)
    worker.start()
    yield worker
    try:
        worker.assert_alive()
    finally:
        worker.stop()


@pytest.fixture
def worker_log(drive_worker: DriveWorker) -> Path:
    """The worker's log (every worker the package started writes to it)."""
    drive_worker.assert_alive()
    return drive_worker.log


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
    """Follow Google's redirect back to our callback (in the browser that started it: the client's cookies):
    (status, the query of where it sends the browser)."""
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
