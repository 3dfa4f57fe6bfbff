"""Idempotency keys in the core: parsing the header, fingerprints, and sealed responses."""

from __future__ import annotations

import uuid

import pytest
from cryptography.exceptions import InvalidTag

from quarry.errors import Invalid
from quarry.idempotency import IdempotencyKey, fingerprint


def test_a_bare_token_and_a_quoted_sf_string_are_the_same_key() -> None:
    assert IdempotencyKey.parse("8e03978e-40d5-43e8") == IdempotencyKey.parse('"8e03978e-40d5-43e8"')
    assert IdempotencyKey.parse(None) is None
    assert IdempotencyKey.parse('"say\\"hi\\""') == IdempotencyKey('say"hi"')


@pytest.mark.parametrize("header", ["", '""', " ", "x" * 256, "tab\there", "caf\u00e9"])
def test_a_malformed_key_is_refused_naming_the_header(header: str) -> None:
    with pytest.raises(Invalid) as refused:
        IdempotencyKey.parse(header)
    assert refused.value.extensions["field"] == "Idempotency-Key"


def test_lookup_hashes_differ_by_tenant_and_never_contain_the_key() -> None:
    key = IdempotencyKey("the-same-key")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert key.lookup_hash(alice) != key.lookup_hash(bob)
    assert "the-same-key" not in key.lookup_hash(alice) and len(key.lookup_hash(alice)) == 64


def test_a_sealed_response_opens_only_with_its_key_and_tenant() -> None:
    key, tenant = IdempotencyKey("k-1"), uuid.uuid4()
    sealed = key.seal(tenant, b'{"key": "sk_live_secret"}')
    assert b"sk_live_secret" not in sealed
    assert key.open(tenant, sealed) == b'{"key": "sk_live_secret"}'
    assert key.seal(tenant, b"same") != key.seal(tenant, b"same"), "a fresh nonce each time"
    with pytest.raises(InvalidTag):
        IdempotencyKey("k-2").open(tenant, sealed)
    with pytest.raises(InvalidTag):
        key.open(uuid.uuid4(), sealed)


def test_fingerprints_cannot_be_confused_by_moving_bytes_between_parts() -> None:
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint("upload", b"x") == fingerprint("upload", "x")
