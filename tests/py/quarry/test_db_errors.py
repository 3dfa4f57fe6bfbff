"""SQL errors become QuarryErrors with the HTTP statuses PostgREST would answer with."""

from __future__ import annotations

import psycopg
import pytest

from quarry.db import sql_error
from tests.py.support.database import DatabaseUrls


def failing(database: DatabaseUrls, statement: str) -> psycopg.Error:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as error:
            return error
    raise AssertionError("the statement did not fail")


def test_pgrst_errors_choose_status_headers_and_body(database: DatabaseUrls) -> None:
    error = failing(
        database,
        """do $$ begin raise sqlstate 'PGRST' using
             message = '{"code": "quota-exceeded", "message": "Monthly documents used up", "limit": 50}',
             detail = '{"status": 402, "headers": {"X-Quota": "documents"}}'; end $$""",
    )
    problem = sql_error(error)
    assert problem.status == 402
    assert problem.headers == {"X-Quota": "documents"}
    assert problem.body()["type"].endswith("/quota-exceeded")
    assert problem.body()["detail"] == "Monthly documents used up"
    assert problem.body()["limit"] == 50


def test_pgrst_details_in_postgrest_shape_become_problem_members(database: DatabaseUrls) -> None:
    # What the quota functions raise: PostgREST keeps code/message/details/hint,
    # so the structured fields ride in `details` as a JSON string.
    error = failing(
        database,
        """select internal.raise_quota_exceeded('free', 'queries_per_day', 100, 100,
             '2031-02-02 00:00:00+00', 'The Free plan allows 100 queries per day.')""",
    )
    body = sql_error(error).body()
    assert body == {
        "type": "https://quarry.dev/problems/quota-exceeded",
        "title": "Payment Required",
        "status": 402,
        "detail": "The Free plan allows 100 queries per day.",
        "limit": "queries_per_day",
        "used": 100,
        "limit_value": 100,
        "resets_at": "2031-02-02T00:00:00Z",
        "plan": "free",
        "hint": "Upgrade your plan, or wait until the limit resets.",
    }


def test_pgrst_details_that_are_not_an_object_stay_as_text(database: DatabaseUrls) -> None:
    error = failing(
        database,
        """do $$ begin raise sqlstate 'PGRST' using
             message = '{"code": "c", "message": "m", "details": "just words", "hint": null}',
             detail = '{"status": 409}'; end $$""",
    )
    body = sql_error(error).body()
    assert body["details"] == "just words"
    assert "hint" not in body


@pytest.mark.parametrize(
    ("statement", "status"),
    [
        ("select 'x'::uuid", 400),
        ("select 1/0", 400),
        ("do $$ begin raise exception 'nope'; end $$", 400),
        ("do $$ begin raise sqlstate 'P0002'; end $$", 500),
        ("do $$ begin raise sqlstate '42501'; end $$", 403),
        ("do $$ begin raise sqlstate '23505'; end $$", 409),
        ("select * from no_such_table", 404),
        ("select no_such_function()", 404),
        ("do $$ begin raise sqlstate 'PT402'; end $$", 402),
        ("do $$ begin raise sqlstate 'PT429'; end $$", 429),
        ("do $$ begin raise sqlstate '40001'; end $$", 500),
        ("do $$ begin raise sqlstate '53300'; end $$", 503),
    ],
)
def test_sqlstates_map_like_postgrest(database: DatabaseUrls, statement: str, status: int) -> None:
    assert sql_error(failing(database, statement)).status == status


def test_insufficient_privilege_is_401_for_anon(database: DatabaseUrls) -> None:
    error = failing(database, "do $$ begin raise sqlstate '42501'; end $$")
    assert sql_error(error, anonymous=True).status == 401


def test_server_errors_do_not_echo_the_database(database: DatabaseUrls) -> None:
    error = failing(database, "do $$ begin raise sqlstate '40001' using message = 'row 42 of tenant x'; end $$")
    assert "tenant" not in sql_error(error).detail


def test_pgrst_extensions_cannot_override_problem_members(database: DatabaseUrls) -> None:
    error = failing(
        database,
        """do $$ begin raise sqlstate 'PGRST' using
             message = '{"code": "c", "message": "m", "status": 200, "type": "x", "detail": "d"}',
             detail = '{"status": 409}'; end $$""",
    )
    body = sql_error(error).body()
    assert (body["status"], body["detail"]) == (409, "m")
    assert body["type"].endswith("/c")


def test_malformed_pgrst_errors_are_500s_not_crashes(database: DatabaseUrls) -> None:
    error = failing(database, "do $$ begin raise sqlstate 'PGRST' using message = 'not json'; end $$")
    assert sql_error(error).status == 500
