"""Connecting Drive (RFC 9700): PKCE S256, a random single-use state bound to the tenant for ten
minutes, the scope checked; every attack is a 400 (or an error flag) with nothing stored."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from starlette.testclient import TestClient

from quarry.drive.crypto import TokenCipher, TokenDecryptionError
from tests.py.gateway.drive.conftest import REDIRECT_URI, authorize, callback, connect, new_tenant
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem, new_key
from tests.py.support.database import TEST_DRIVE_TOKEN_KEYS
from tests.py.support.google import DRIVE_READONLY, FakeGoogle
from tests.py.support.tokens import TokenFactory


@pytest.fixture(autouse=True)
def consenting(google: FakeGoogle) -> Iterator[None]:
    yield
    google.consent, google.granted_scope, google.issue_refresh_token = "grant", None, True


@pytest.fixture
def tenant(admin: Admin, drive_gateway: TestClient, tokens: TokenFactory) -> Api:
    return new_tenant(admin, drive_gateway, tokens)


def connections(admin: Admin, tenant: uuid.UUID) -> int:
    count = admin.scalar("select count(*) from app.drive_connections where tenant_id = %s", tenant)
    assert isinstance(count, int)
    return count


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_the_consent_url_asks_for_offline_read_only_access_with_pkce(tenant: Api, admin: Admin) -> None:
    params = query_of(authorize(tenant))
    assert params["response_type"] == "code"
    assert params["scope"] == DRIVE_READONLY
    assert (params["access_type"], params["prompt"]) == ("offline", "consent")
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["redirect_uri"] == REDIRECT_URI
    state = params["state"]
    assert len(state) >= 43 and state != str(tenant.tenant_id)  # 256 random bits, never the user id
    rows = admin.execute(
        "select state_hash, expires_at - created_at from app.drive_oauth_states where tenant_id = %s", tenant.tenant_id
    )
    assert rows == [(hashlib.sha256(state.encode()).digest(), timedelta(minutes=10))]
    assert admin.scalar("select count(*) from app.drive_oauth_states where code_verifier like %s", f"%{state}%") == 0


def test_connecting_stores_the_refresh_token_encrypted_for_this_tenant_only(
    tenant: Api, admin: Admin, google: FakeGoogle
) -> None:
    connect(tenant, google)
    reply = tenant.get("/api/drive/connection")
    assert reply.status_code == 200 and reply.json()["status"] == "active"
    assert reply.json()["scopes"] == [DRIVE_READONLY]
    [(connection_id, key_id, ciphertext)] = admin.execute(
        "select id, token_key_id, token_ciphertext from app.drive_connections where tenant_id = %s", tenant.tenant_id
    )
    assert isinstance(connection_id, uuid.UUID) and isinstance(ciphertext, bytes)
    cipher = TokenCipher.parse(TEST_DRIVE_TOKEN_KEYS)
    token = cipher.decrypt(ciphertext, tenant.tenant_id, connection_id)
    assert token in google.refresh_tokens and key_id == "test1"
    assert token.encode() not in ciphertext and token not in reply.text
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(ciphertext, uuid.uuid4(), connection_id)  # bound to its tenant
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(ciphertext, tenant.tenant_id, uuid.uuid4())  # and to its connection


def test_a_replayed_state_is_refused_and_changes_nothing(tenant: Api, admin: Admin, google: FakeGoogle) -> None:
    redirect = google.consent_redirect(authorize(tenant))
    assert callback(tenant, redirect) == (303, {"drive": ["connected"]})
    before = admin.execute(
        "select id, token_ciphertext from app.drive_connections where tenant_id = %s", tenant.tenant_id
    )
    query = urlsplit(redirect).query
    response = tenant.client.get(f"/api/drive/callback?{query}", follow_redirects=False)
    assert_problem(response, 400, "invalid-oauth-state")
    after = admin.execute(
        "select id, token_ciphertext from app.drive_connections where tenant_id = %s", tenant.tenant_id
    )
    assert before == after


def test_an_expired_state_is_refused(
    tenant: Api, admin: Admin, google: FakeGoogle, clock: Callable[[datetime | None], None]
) -> None:
    redirect = google.consent_redirect(authorize(tenant))
    clock(datetime.now(UTC) + timedelta(minutes=11))
    assert callback(tenant, redirect)[0] == 400
    clock(None)
    assert connections(admin, tenant.tenant_id) == 0


def test_another_tenant_cannot_complete_a_state(
    tenant: Api, admin: Admin, google: FakeGoogle, drive_gateway: TestClient, tokens: TokenFactory
) -> None:
    other = new_tenant(admin, drive_gateway, tokens)
    redirect = google.consent_redirect(authorize(tenant))
    assert callback(other, redirect, authenticated=True)[0] == 400
    assert connections(admin, tenant.tenant_id) == connections(admin, other.tenant_id) == 0
    assert callback(tenant, redirect)[0] == 400, "the state is burnt once presented"


def test_a_code_issued_for_another_pkce_challenge_is_refused(tenant: Api, admin: Admin, google: FakeGoogle) -> None:
    url = authorize(tenant)
    params = query_of(url)
    params["code_challenge"] = "A" * 43  # the code an attacker obtained with a verifier of its own
    forged = urlunsplit(urlsplit(url)._replace(query=urlencode(params)))
    assert callback(tenant, google.consent_redirect(forged)) == (
        303,
        {"drive": ["error"], "reason": ["exchange_failed"]},
    )
    assert connections(admin, tenant.tenant_id) == 0


def test_a_missing_scope_stores_nothing_and_revokes_what_was_granted(
    tenant: Api, admin: Admin, google: FakeGoogle
) -> None:
    google.granted_scope = "openid email"
    revoked = len(google.revoked)
    assert callback(tenant, google.consent_redirect(authorize(tenant))) == (
        303,
        {"drive": ["error"], "reason": ["scope_not_granted"]},
    )
    assert connections(admin, tenant.tenant_id) == 0
    assert len(google.revoked) == revoked + 1


@pytest.mark.parametrize(
    ("arrange", "reason"),
    [({"consent": "deny"}, "consent_denied"), ({"issue_refresh_token": False}, "no_refresh_token")],
)
def test_consent_denied_or_no_refresh_token_is_a_clear_error(
    tenant: Api, admin: Admin, google: FakeGoogle, arrange: dict[str, object], reason: str
) -> None:
    for name, value in arrange.items():
        setattr(google, name, value)
    assert callback(tenant, google.consent_redirect(authorize(tenant))) == (
        303,
        {"drive": ["error"], "reason": [reason]},
    )
    assert connections(admin, tenant.tenant_id) == 0


@pytest.mark.parametrize("query", ["code=abc", "state=never-issued&code=abc", "state=&code=abc"])
def test_a_missing_or_unknown_state_is_a_400(tenant: Api, query: str) -> None:
    response = tenant.client.get(f"/api/drive/callback?{query}", follow_redirects=False)
    assert_problem(response, 400, "invalid-oauth-state")


def test_disconnecting_revokes_the_token_at_google_and_pauses_the_folders(
    tenant: Api, admin: Admin, google: FakeGoogle
) -> None:
    connect(tenant, google)
    [(connection_id, ciphertext)] = admin.execute(
        "select id, token_ciphertext from app.drive_connections where tenant_id = %s", tenant.tenant_id
    )
    token = TokenCipher.parse(TEST_DRIVE_TOKEN_KEYS).decrypt(ciphertext, tenant.tenant_id, connection_id)  # type: ignore[arg-type]
    assert tenant.delete("/api/drive/connection").status_code == 204
    assert token in google.revoked
    assert connections(admin, tenant.tenant_id) == 0
    assert_problem(tenant.delete("/api/drive/connection"), 404)


def test_the_state_is_bound_to_the_browser_that_started_it(tenant: Api, admin: Admin, google: FakeGoogle) -> None:
    tenant.client.cookies.clear()
    response = tenant.client.post("/api/drive/authorize", headers=tenant.headers)
    assert response.status_code == 200 and response.json()["bound_to_browser"] is True
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("quarry_drive_oauth_"), cookie
    for attribute in ("HttpOnly", "Max-Age=600", "Path=/api/drive/callback", "SameSite=lax", "Secure"):
        assert attribute.lower() in cookie.lower(), cookie
    redirect = google.consent_redirect(response.json()["url"])
    starting_browser = dict(tenant.client.cookies)

    tenant.client.cookies.clear()  # the consent completed in another browser (the URL was sent elsewhere)
    assert callback(tenant, redirect)[0] == 400
    assert connections(admin, tenant.tenant_id) == 0
    tenant.client.cookies.update(starting_browser)
    assert callback(tenant, redirect)[0] == 400, "the state was burnt by the refused attempt"

    tenant.client.cookies.clear()
    assert callback(tenant, google.consent_redirect(authorize(tenant))) == (303, {"drive": ["connected"]})
    assert not any(name.startswith("quarry_drive_oauth_") for name in tenant.client.cookies), "the cookie is cleared"


def test_another_authorization_s_cookie_does_not_bind(tenant: Api, admin: Admin, google: FakeGoogle) -> None:
    tenant.client.cookies.clear()
    redirect = google.consent_redirect(authorize(tenant))
    mine = dict(tenant.client.cookies)
    tenant.client.cookies.clear()
    authorize(tenant)  # another authorization's cookie, under its own name
    other = {name: value for name, value in tenant.client.cookies.items() if name not in mine}
    tenant.client.cookies.clear()
    [(mine_name, _)] = mine.items()
    [(_, other_value)] = other.items()
    tenant.client.cookies.set(mine_name, other_value, path="/api/drive/callback")
    assert callback(tenant, redirect)[0] == 400
    assert connections(admin, tenant.tenant_id) == 0


def test_a_server_flow_with_an_api_key_is_bound_by_the_state_alone(
    tenant: Api, admin: Admin, google: FakeGoogle
) -> None:
    _, key = new_key(tenant)
    tenant.client.cookies.clear()
    response = tenant.client.post("/api/drive/authorize", headers={"Authorization": key})
    assert response.status_code == 200, response.text
    assert response.json()["bound_to_browser"] is False and "set-cookie" not in response.headers
    # The user's browser, which never saw Quarry's API, completes it.
    assert callback(tenant, google.consent_redirect(response.json()["url"])) == (303, {"drive": ["connected"]})
    assert connections(admin, tenant.tenant_id) == 1
