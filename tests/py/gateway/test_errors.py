"""SQL errors map to the HTTP statuses PostgREST would answer with."""

from __future__ import annotations

import psycopg
import pytest

from gateway.errors import problem_from_sql_error
from tests.py.conftest import DatabaseUrls


def sql_error(database: DatabaseUrls, statement: str) -> psycopg.Error:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as error:
            return error
    raise AssertionError("the statement did not fail")


def test_pgrst_errors_choose_status_headers_and_body(database: DatabaseUrls) -> None:
    error = sql_error(
        database,
        """do $$ begin raise sqlstate 'PGRST' using
             message = '{"code": "quota-exceeded", "message": "Monthly documents used up", "limit": 50}',
             detail = '{"status": 402, "headers": {"X-Quota": "documents"}}'; end $$""",
    )
    problem = problem_from_sql_error(error)
    assert problem.status == 402
    assert problem.headers == {"X-Quota": "documents"}
    assert problem.body()["type"].endswith("/quota-exceeded")
    assert problem.body()["detail"] == "Monthly documents used up"
    assert problem.body()["limit"] == 50


@pytest.mark.parametrize(
    ("statement", "status"),
    [
        ("select 'x'::uuid", 400),
        ("do $$ begin raise sqlstate 'P0002'; end $$", 404),
        ("do $$ begin raise sqlstate '42501'; end $$", 403),
        ("do $$ begin raise sqlstate '23505'; end $$", 409),
    ],
)
def test_standard_sqlstates(database: DatabaseUrls, statement: str, status: int) -> None:
    assert problem_from_sql_error(sql_error(database, statement)).status == status


def test_unmapped_errors_propagate(database: DatabaseUrls) -> None:
    error = sql_error(database, "select 1/0")
    with pytest.raises(psycopg.errors.DivisionByZero):
        problem_from_sql_error(error)


def test_malformed_pgrst_errors_are_500s_not_crashes(database: DatabaseUrls) -> None:
    error = sql_error(database, "do $$ begin raise sqlstate 'PGRST' using message = 'not json'; end $$")
    assert problem_from_sql_error(error).status == 500
