from __future__ import annotations

from starlette.testclient import TestClient

from tests.py.support.database import Users
from tests.py.support.tokens import TokenFactory


def test_me_returns_the_callers_tenant(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    for user, email in ((users.alice, "alice@example.com"), (users.bob, "bob@example.com")):
        response = gateway.get("/api/me", headers={"Authorization": f"Bearer {tokens.es256(user, email=email)}"})
        assert response.status_code == 200
        assert response.json() == {"tenant_id": str(user), "email": email, "plan": "enterprise"}


def test_me_without_an_email_claim(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    response = gateway.get("/api/me", headers={"Authorization": f"Bearer {tokens.es256(users.bob, email=None)}"})
    assert response.status_code == 200
    assert response.json()["email"] is None
