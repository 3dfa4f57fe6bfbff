"""Refresh tokens at rest: AES-256-GCM, a key id for rotation, bound to tenant and connection."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from quarry.drive.crypto import TokenCipher, TokenDecryptionError, TokenKeyError, new_key_entry
from quarry.drive.rotate import rotate
from quarry.settings import Settings, SettingsError
from tests.py.support.database import TEST_DRIVE_TOKEN_KEYS, DatabaseUrls

TENANT, CONNECTION = uuid.uuid4(), uuid.uuid4()


def test_a_token_round_trips_and_is_not_in_the_ciphertext() -> None:
    cipher = TokenCipher.parse(new_key_entry("k1"))
    key_id, sealed = cipher.encrypt("1//refresh-token", TENANT, CONNECTION)
    assert key_id == "k1" and TokenCipher.key_id_of(sealed) == "k1"
    assert b"refresh-token" not in sealed
    assert cipher.decrypt(sealed, TENANT, CONNECTION) == "1//refresh-token"
    assert cipher.encrypt("1//refresh-token", TENANT, CONNECTION)[1] != sealed, "a fresh nonce each time"


@pytest.mark.parametrize("other", ["tenant", "connection", "tampered"])
def test_it_does_not_decrypt_for_another_tenant_connection_or_altered(other: str) -> None:
    cipher = TokenCipher.parse(new_key_entry("k1"))
    _, sealed = cipher.encrypt("secret", TENANT, CONNECTION)
    tenant, connection = TENANT, CONNECTION
    if other == "tenant":
        tenant = uuid.uuid4()
    elif other == "connection":
        connection = uuid.uuid4()
    else:
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(sealed, tenant, connection)


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old = new_key_entry("old")
    _, sealed = TokenCipher.parse(old).encrypt("secret", TENANT, CONNECTION)
    rotated = TokenCipher.parse(f"{new_key_entry('new')},{old}")
    assert rotated.current_key_id == "new"
    assert rotated.decrypt(sealed, TENANT, CONNECTION) == "secret"
    with pytest.raises(TokenKeyError, match="old"):
        TokenCipher.parse(new_key_entry("new")).decrypt(sealed, TENANT, CONNECTION)


@pytest.mark.parametrize(
    "raw",
    ["", "k1", "k1:notbase64!", "k1:c2hvcnQ=", "bad id:" + "A" * 44, f"{new_key_entry('a')},{new_key_entry('a')}"],
    # Named, not shown: the last case holds random keys, and parallel workers must collect the same ids.
    ids=["empty", "no key", "not base64", "short key", "bad key id", "duplicate key id"],
)
def test_malformed_keys_are_refused(raw: str) -> None:
    with pytest.raises(TokenKeyError):
        TokenCipher.parse(raw)


def test_production_refuses_drive_without_its_settings_and_names_them() -> None:
    env = {
        "QUARRY_ENV": "production",
        "DATABASE_URL": "postgresql://x",
        "TENANT_DATABASE_URL": "postgresql://y",
        "SUPABASE_URL": "https://p.supabase.co",
        "QUARRY_DATA_DIR": "/srv/quarry",
        "GOOGLE_OAUTH_CLIENT_ID": "id",
    }
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    for name in ("GOOGLE_OAUTH_CLIENT_SECRET", "GOOGLE_OAUTH_REDIRECT_URI", "DRIVE_TOKEN_KEYS", "DRIVE_APP_URL"):
        assert name in str(refused.value)
    assert "GOOGLE_OAUTH_CLIENT_ID," not in str(refused.value)
    assert Settings.from_env({**env, "DRIVE": "off"}).drive is None


def test_the_rotation_command_re_encrypts_every_token_under_the_newest_key(database: DatabaseUrls) -> None:
    old_entry, new_entry = new_key_entry("rot-old"), new_key_entry("rot-new")
    old = TokenCipher.parse(old_entry)
    tenants = []
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for n in range(3):
            row = conn.execute(
                "select tests.create_user(%s)", (f"rotate-{uuid.uuid4().hex[:8]}@example.com",)
            ).fetchone()
            assert row is not None
            tenant, connection = row[0], uuid.uuid4()
            key_id, sealed = old.encrypt(f"token-{n}", tenant, connection)
            conn.execute(
                "select internal.save_drive_connection(%s, %s, '{}', %s, %s)", (tenant, connection, key_id, sealed)
            )
            tenants.append((tenant, connection, f"token-{n}"))
    # Other tests' connections are under the test key: this cipher holds it too, and puts them back after.
    both = TokenCipher.parse(f"{new_entry},{old_entry},{TEST_DRIVE_TOKEN_KEYS}")
    rotated, skipped = rotate(database.worker_url, both)
    assert rotated >= 3 and skipped == 0
    only_new = TokenCipher.parse(new_entry)
    with psycopg.connect(database.admin_url) as conn:
        for tenant, connection, token in tenants:
            row = conn.execute(
                "select token_key_id, token_ciphertext from app.drive_connections where tenant_id = %s", (tenant,)
            ).fetchone()
            assert row is not None and row[0] == "rot-new"
            assert only_new.decrypt(row[1], tenant, connection) == token
    assert rotate(database.worker_url, both) == (0, 0)
    rotate(database.worker_url, TokenCipher.parse(f"{TEST_DRIVE_TOKEN_KEYS},{new_entry}"))
