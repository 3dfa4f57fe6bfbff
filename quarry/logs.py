"""Structured logs: every line names the request (or job) it belongs to.

`LOG_FORMAT=json` (the default in production) writes one JSON object per
line: `ts`, `level`, `logger`, `message`, and, when there is one,
`request_id`, `job_id` and `task`, plus `exception` (the traceback) for an
error.  `LOG_FORMAT=text` (the default elsewhere) writes the same fields as a
readable line.  The gateway sets the request id for the whole request (the
`X-Request-Id` it answers); a worker job runs under the request id of the
request that deferred it (internal.defer_job carries it in the job's
arguments), so one id follows an upload from the HTTP request to the end of
its ingest job.  Messages never carry secrets or document text: that rule is
the callers', the format adds only ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

LOG_FORMATS = ("text", "json")

request_id_var: ContextVar[str | None] = ContextVar("quarry_request_id", default=None)
job_var: ContextVar[tuple[int, str] | None] = ContextVar("quarry_job", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def current_request_id() -> str | None:
    return request_id_var.get()


@contextmanager
def request_context(request_id: str | None, *, job: tuple[int, str] | None = None) -> Iterator[None]:
    """Log lines in the block (and in tasks it starts) carry this request id and job."""
    request_token = request_id_var.set(request_id)
    job_token = job_var.set(job) if job is not None else None
    try:
        yield
    finally:
        request_id_var.reset(request_token)
        if job_token is not None:
            job_var.reset(job_token)


class ContextFields(logging.Filter):
    """Puts the request id, job id and task on every record (from the context, or from the job
    procrastinate names in its own records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        job = job_var.get()
        job_id, task = job if job is not None else (None, None)
        logged_job = getattr(record, "job", None)
        if isinstance(logged_job, Mapping):  # procrastinate's records carry the job they are about
            kwargs = logged_job.get("task_kwargs")
            if request_id is None and isinstance(kwargs, Mapping) and isinstance(kwargs.get("request_id"), str):
                request_id = kwargs["request_id"]
            job_id = job_id if job_id is not None else logged_job.get("id")
            task = task if task is not None else logged_job.get("task_name")
        record.request_id = request_id if request_id is not None else "-"
        record.job_id = job_id
        record.task = task
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id not in (None, "-"):
            entry["request_id"] = request_id
        for name in ("job_id", "task"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    log_format: str,
    level: str = "INFO",
    *,
    extra_loggers: tuple[str, ...] = (),
    filters: tuple[logging.Filter, ...] = (),
) -> None:
    """The root logger (and loggers with handlers of their own, e.g. uvicorn's) in this format.

    Idempotent: calling it again replaces the formatter, never adds a handler.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    handlers = list(root.handlers)
    for name in extra_loggers:
        handlers.extend(logging.getLogger(name).handlers)
    for handler in handlers:
        handler.setFormatter(formatter(log_format))
        for extra in (ContextFields(), *filters):
            if not any(type(existing) is type(extra) for existing in handler.filters):
                handler.addFilter(extra)
