"""Per-hour rate limits at the gateway: RateLimit-* headers on every counted
response, 429 with Retry-After past the limit, one window per caller."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory, assert_problem
from tests.py.support.tokens import TokenFactory


def seconds_to_next_hour() -> float:
    now = datetime.now(UTC)
    return 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)


def fill_window(admin: Admin, tenant: uuid.UUID, requests: int) -> None:
    admin.execute(
        """
        insert into app.rate_limit_windows (tenant_id, subject_id, window_start, requests)
        values (%s, %s, date_trunc('hour', app.clock(), 'UTC'), %s)
        on conflict (tenant_id, subject_id)
        do update set window_start = excluded.window_start, requests = excluded.requests
        """,
        tenant,
        tenant,
        requests,
    )


def test_every_counted_response_carries_the_headers(free_user: Api) -> None:
    ok = free_user.get("/api/documents")
    not_found = free_user.get(f"/api/documents/{uuid.uuid4()}")

    assert ok.status_code == 200 and not_found.status_code == 404
    assert (ok.headers["RateLimit-Limit"], ok.headers["RateLimit-Remaining"]) == ("50", "49")
    assert (not_found.headers["RateLimit-Limit"], not_found.headers["RateLimit-Remaining"]) == ("50", "48")
    assert 0 <= int(ok.headers["RateLimit-Reset"]) <= 3600
    assert abs(int(ok.headers["RateLimit-Reset"]) - seconds_to_next_hour()) <= 2


def test_over_the_limit_is_429_with_retry_after(free_user: Api, admin: Admin) -> None:
    fill_window(admin, free_user.tenant_id, 49)

    last = free_user.get("/api/documents")
    refused = free_user.get("/api/documents")

    assert last.status_code == 200 and last.headers["RateLimit-Remaining"] == "0"
    body = assert_problem(refused, 429)
    assert body["type"] == "https://quarry.dev/problems/rate-limited"
    assert (body["limit"], body["limit_value"]) == ("requests_per_hour", 50)
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers["Retry-After"] == str(max(1, int(refused.headers["RateLimit-Reset"])))


def test_a_refused_request_does_nothing(free_user: Api, admin: Admin) -> None:
    fill_window(admin, free_user.tenant_id, 50)

    assert_problem(free_user.upload("spam.txt", b"spam"), 429)

    assert admin.documents(free_user.tenant_id) == 0
    assert admin.used(free_user.tenant_id, "documents_per_month") == 0


def test_a_paid_plan_raises_the_limit_at_once(free_user: Api, admin: Admin) -> None:
    fill_window(admin, free_user.tenant_id, 50)
    assert_problem(free_user.get("/api/documents"), 429)

    admin.subscribe(free_user.tenant_id, "pro", "active")

    response = free_user.get("/api/documents")
    assert response.status_code == 200
    # 50 allowed + the refused one (counting stops at limit + 1) + this one
    assert (response.headers["RateLimit-Limit"], response.headers["RateLimit-Remaining"]) == ("500", "448")


def test_each_user_has_a_window_of_its_own(free_user: Api, admin: Admin, tokens: TokenFactory) -> None:
    fill_window(admin, free_user.tenant_id, 50)
    other = Api(free_user.client, "", admin.new_user())
    other.token = tokens.es256(other.tenant_id)

    assert_problem(free_user.get("/api/documents"), 429)
    assert other.get("/api/documents").status_code == 200


def test_unauthenticated_requests_are_not_counted(free_user: Api, admin: Admin) -> None:
    response = free_user.client.get("/api/documents", headers={"Authorization": "Bearer nonsense"})

    assert response.status_code == 401
    assert "RateLimit-Limit" not in response.headers
    assert admin.scalar("select count(*) from app.rate_limit_windows where tenant_id = %s", free_user.tenant_id) == 0


def test_rate_limits_can_be_left_to_a_proxy(make_gateway: GatewayFactory, admin: Admin, tokens: TokenFactory) -> None:
    client = make_gateway(RATE_LIMITS="off")
    tenant = admin.new_user()
    fill_window(admin, tenant, 50)

    response = client.get("/api/documents", headers={"Authorization": f"Bearer {tokens.es256(tenant)}"})

    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers
