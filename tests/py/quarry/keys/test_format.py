"""The key format: what the gateway accepts before touching the database."""

from __future__ import annotations

import zlib

import pytest

from quarry.keys.format import BASE62, base62, checksum, parse_api_key

LOOKUP = "AbCdEfGh1234"
SECRET = "s" * 16 + "T" * 16


def make_key(lookup: str = LOOKUP, secret: str = SECRET) -> str:
    body = f"sk_live_{lookup}_{secret}"
    return body + checksum(body)


def test_checksum_is_crc32_in_six_base62_digits() -> None:
    body = f"sk_live_{LOOKUP}_{SECRET}"
    value = zlib.crc32(body.encode())
    digits = checksum(body)
    assert len(digits) == 6
    assert sum(BASE62.index(d) * 62**i for i, d in enumerate(reversed(digits))) == value
    assert base62(0, 6) == "000000" and base62(61, 1) == "z"


def test_a_well_formed_key_parses() -> None:
    parsed = parse_api_key(make_key())
    assert parsed is not None
    assert (parsed.lookup_id, parsed.secret) == (LOOKUP, SECRET)


def test_every_single_character_typo_is_caught() -> None:
    key = make_key()
    for position in range(len("sk_live_"), len(key)):
        for replacement in "0aZ_":
            if key[position] != replacement:
                typo = key[:position] + replacement + key[position + 1 :]
                assert parse_api_key(typo) is None, typo


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "sk_",
        "sk_live_",
        "sk_test_" + make_key()[8:],
        make_key() + "x",
        make_key()[:-1],
        make_key().replace("_", "-"),
        " " + make_key(),
        make_key().upper(),
        "eyJhbGciOiJFUzI1NiJ9.e30.sig",
    ],
)
def test_junk_is_refused(junk: str) -> None:
    assert parse_api_key(junk) is None
