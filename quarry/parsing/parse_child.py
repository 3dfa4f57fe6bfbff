"""One parse child of quarry.parsing.pool: `python -m quarry.parsing.parse_child ADDRESS_SPACE_BYTES`.

It imports every parser once, caps its own address space (RLIMIT_AS), says it
is ready, then extracts one document per request until its stdin closes.
Requests are JSON lines {"path", "format", "max_text_chars", "cpu_seconds"}; each reply is an
8-byte big-endian length and a JSON object (see quarry.parsing.pool). Replies
are JSON, never pickle: the child parses hostile files and the worker must not
trust what comes back beyond its shape.
"""

from __future__ import annotations

import json
import math
import os
import resource
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.extract import extract
from quarry.parsing.segments import Extracted
from quarry.priority import lower_cpu_priority

LENGTH = struct.Struct(">Q")
PARSE_NICENESS = 10


def truncation_notice(max_text_chars: int) -> str:
    return f"[The extracted text was cut at {max_text_chars:,} characters; the rest of the document is not searchable.]"


def bounded_reply(extracted: Extracted, max_text_chars: int) -> dict[str, Any]:
    """The segments as a reply, cut at max_text_chars characters of text with a notice segment at the end."""
    segments: list[tuple[str, dict[str, int | str]]] = []
    left = max_text_chars
    truncated = False
    for segment in extracted.segments:
        if len(segment.text) > left:
            if left:
                segments.append((segment.text[:left], segment.position))
            truncated = True
            break
        segments.append((segment.text, segment.position))
        left -= len(segment.text)
    if truncated:
        segments.append((truncation_notice(max_text_chars), {"note": "truncated"}))
    return {"segments": segments, "page_count": extracted.page_count, "truncated": truncated}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    # A backstop for a child whose pool is gone (the worker killed): the CPU limit ends it, with SIGXCPU.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_limit = math.ceil(usage.ru_utime + usage.ru_stime + float(request["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, resource.RLIM_INFINITY))
    try:
        extracted = extract(Path(request["path"]), request["format"])
        return bounded_reply(extracted, int(request["max_text_chars"]))
    except UnreadableDocument as error:
        return {"unreadable": error.reason}
    except MemoryError:
        return {"memory": True}
    except OSError as error:
        return {"os_error": repr(error)}
    except Exception as error:  # a parser bug: the worker logs the type and fails the document
        return {"error": type(error).__name__}


def send(channel: BinaryIO, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    channel.write(LENGTH.pack(len(body)) + body)
    channel.flush()


def main() -> None:
    address_space = int(sys.argv[1])
    # Replies go out on a private copy of stdout; anything a library prints lands on stderr.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    # Parsing is batch work: where it shares cores with the gateway or the worker's embedding, the
    # kernel serves those first, so a tenant's hostile files slow its own ingest, not others' requests.
    # The pool starts each child in a session of its own.
    lower_cpu_priority(PARSE_NICENESS)
    send(channel, {"ready": True, "pid": os.getpid()})
    for line in sys.stdin.buffer:
        reply = handle(json.loads(line))
        send(channel, reply)
        if "memory" in reply:
            return  # a heap that hit its limit may be fragmented: let the pool start a fresh child


if __name__ == "__main__":
    main()
