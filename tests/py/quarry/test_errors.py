"""The error hierarchy: kinds, slugs, headers, and what callers are (not) told."""

from __future__ import annotations

import pytest

from quarry.errors import (
    Conflict,
    Invalid,
    NotFound,
    QuarryError,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    error_for_status,
)
from quarry.index.base import IndexUnavailable
from quarry.parsing.errors import UnreadableDocument, UnsupportedDocument
from quarry.storage.blobs import BlobNotFound, BlobStoreUnavailable


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, Unauthorized), (402, QuotaExceeded), (404, NotFound), (409, Conflict), (422, Invalid), (503, Unavailable)],
)
def test_a_status_chosen_elsewhere_becomes_its_kind(status: int, kind: type[QuarryError]) -> None:
    error = error_for_status(status, "Said by SQL.", slug="custom-slug", extensions={"limit": "x"})
    assert type(error) is kind and error.status == status
    assert error.body()["type"] == "https://quarry.dev/problems/custom-slug" and error.body()["limit"] == "x"


def test_a_status_without_a_kind_keeps_its_status() -> None:
    error = error_for_status(400, "Bad value.")
    assert (error.status, error.slug) == (400, "bad-request")
    assert error_for_status(405, "No.").slug == "method-not-allowed"


def test_unavailable_always_says_when_to_retry_and_is_retryable() -> None:
    assert error_for_status(503, "Down.").headers["Retry-After"] == "2"
    assert Unavailable("Down.", retry_after=9).headers == {"Retry-After": "9"}
    assert Unavailable.retryable and not Invalid.retryable and not NotFound.retryable


def test_operators_get_the_internal_story_callers_the_sentence() -> None:
    error = IndexUnavailable("cannot open the Qdrant Edge shard at /srv/index: locked")
    assert isinstance(error, Unavailable) and error.slug == "index-unavailable"
    assert "/srv" in str(error) and "/srv" not in error.body()["detail"]
    storage = BlobStoreUnavailable("S3 answered 500 for documents/t/d")
    assert storage.status == 503 and "documents/" not in storage.detail
    assert isinstance(BlobNotFound("documents/t/d"), NotFound)


def test_parsing_errors_are_kinds_too() -> None:
    unsupported = UnsupportedDocument("Not a PDF.", detected="ELF executable")
    assert (unsupported.status, unsupported.slug, unsupported.body()["detected"]) == (
        415,
        "unsupported-document",
        "ELF executable",
    )
    unreadable = UnreadableDocument("The PDF is encrypted.")
    assert unreadable.reason == unreadable.detail and not unreadable.retryable


def test_extensions_cannot_replace_the_problem_members() -> None:
    body = Invalid("Real detail.", extensions={"status": 200, "detail": "forged", "type": "x", "field": "name"}).body()
    assert (body["status"], body["detail"], body["field"]) == (422, "Real detail.", "name")
    assert body["type"].endswith("/invalid-parameter")


def test_unauthorized_tells_how_to_authenticate() -> None:
    assert Unauthorized("No token.").headers["WWW-Authenticate"].startswith("Bearer")
