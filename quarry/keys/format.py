"""The API key format: sk_live_<lookup id: 12>_<secret: 32><checksum: 6>, base62.

The checksum is CRC-32 (zlib) of everything before it, in base62: typos and
junk are refused here, without the database, and secret scanners can tell a
real key from a look-alike.  Keys are issued in SQL (internal.issue_api_key),
which computes the same checksum.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

PREFIX = "sk_live_"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_LENGTH = 6
_KEY = re.compile(rf"^{PREFIX}([0-9A-Za-z]{{12}})_([0-9A-Za-z]{{32}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    lookup_id: str
    secret: str


def base62(value: int, size: int) -> str:
    digits = []
    for _ in range(size):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def looks_like_api_key(token: str) -> bool:
    return token.startswith("sk_")


def parse_api_key(token: str) -> ParsedKey | None:
    """The parts of a well-formed key whose checksum holds; None for anything else."""
    match = _KEY.match(token)
    if match is None or checksum(token[:-CHECKSUM_LENGTH]) != match.group(3):
        return None
    return ParsedKey(lookup_id=match.group(1), secret=match.group(2))
