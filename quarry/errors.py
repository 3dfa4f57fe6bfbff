"""One typed error hierarchy for every Quarry process.

A `QuarryError` carries what a caller needs to act on a failure: an HTTP
status, a stable slug (the problem type), one sentence for a person, optional
headers and extra members.  Each kind below is one kind of problem; parsing,
storage, index and database errors subclass the kind they are.  The gateway
turns any of them into RFC 9457 problem+json in one place
(`gateway/errors.py`); worker jobs read `retryable` to decide between
"try again later" and "fail the document for good".

Slugs are the `type` of a problem (`https://quarry.dev/problems/<slug>`): one
slug per kind of problem across the whole API, listed in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://quarry.dev/problems/"
# Members RFC 9457 reserves: extensions cannot replace them.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
DEFAULT_RETRY_AFTER_SECONDS = 2


class QuarryError(Exception):
    """A failure with a status, a slug and a sentence a user understands."""

    status: int = 500
    slug: str = "internal-error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        status: int | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
        internal: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        # str(error) is for operators (logs, ops views); `detail` is what a caller is told.
        super().__init__(internal or detail)
        self.detail = detail
        self.sqlstate = sqlstate  # when the database raised it: for logs
        if slug is not None:
            self.slug = slug
        if status is not None:
            self.status = status
        self.title = title or HTTPStatus(self.status).phrase
        self.headers = dict(headers or {})
        self.extensions = {k: v for k, v in (extensions or {}).items() if k not in RESERVED_MEMBERS}

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json document."""
        payload: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            payload["instance"] = instance
        payload.update(self.extensions)
        return payload

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.slug!r})"


class MalformedRequest(QuarryError):
    """The request body cannot be parsed at all (not JSON, not multipart)."""

    status = 400
    slug = "malformed-body"


class Unauthorized(QuarryError):
    status = 401
    slug = "unauthorized"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"', **(kwargs.pop("headers", None) or {})}
        super().__init__(detail, headers=headers, **kwargs)


class QuotaExceeded(QuarryError):
    """A plan limit is used up (402): `limit`, `used`, `limit_value`, `resets_at`, `plan`."""

    status = 402
    slug = "quota-exceeded"


class Forbidden(QuarryError):
    status = 403
    slug = "forbidden"


class NotFound(QuarryError):
    """No such thing, or not the caller's (another tenant's row is a 404, never a 403)."""

    status = 404
    slug = "not-found"


class MethodNotAllowed(QuarryError):
    status = 405
    slug = "method-not-allowed"


class Conflict(QuarryError):
    """The request clashes with the current state (not processed yet, too many keys, a duplicate)."""

    status = 409
    slug = "conflict"


class PayloadTooLarge(QuarryError):
    status = 413
    slug = "payload-too-large"


class Unsupported(QuarryError):
    """The content is of a kind the API does not take (wrong Content-Type, unknown format)."""

    status = 415
    slug = "unsupported-media-type"


class Invalid(QuarryError):
    """A value the API cannot accept; `field` names it when there is one."""

    status = 422
    slug = "invalid-parameter"


class RateLimited(QuarryError):
    status = 429
    slug = "rate-limited"


class InternalError(QuarryError):
    """A bug or an unforeseen state: never echoes what went wrong inside."""

    status = 500
    slug = "internal-error"

    def __init__(self, detail: str = "The server failed to process the request.", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)


class Unavailable(QuarryError):
    """A dependency (database, storage, vector index) cannot be reached now: try again shortly."""

    status = 503
    slug = "unavailable"
    retryable = True

    def __init__(self, detail: str, *, retry_after: int = DEFAULT_RETRY_AFTER_SECONDS, **kwargs: Any) -> None:
        headers = {"Retry-After": str(retry_after), **(kwargs.pop("headers", None) or {})}
        super().__init__(detail, headers=headers, **kwargs)


class DatabaseUnavailable(Unavailable):
    slug = "database-unavailable"

    def __init__(self, detail: str = "The database is unavailable; try again shortly.", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)


# The kinds a status chosen elsewhere (by SQL) maps to.  400 is not among them:
# MalformedRequest means "unparseable body", which only the body readers know.
KINDS: tuple[type[QuarryError], ...] = (
    Unauthorized,
    QuotaExceeded,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Unsupported,
    Invalid,
    RateLimited,
    InternalError,
    Unavailable,
)
_KIND_BY_STATUS = {kind.status: kind for kind in KINDS}


def error_for_status(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
    sqlstate: str | None = None,
) -> QuarryError:
    """The kind of error a status names (SQL chooses statuses, see quarry.db), or a plain QuarryError."""
    kind = _KIND_BY_STATUS.get(status)
    if kind is None:
        return QuarryError(
            detail,
            slug=slug or _slug_of(status),
            status=status,
            headers=headers,
            extensions=extensions,
            sqlstate=sqlstate,
        )
    return kind(detail, slug=slug, headers=headers, extensions=extensions, sqlstate=sqlstate)


def _slug_of(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
