"""Refresh tokens at rest: AES-256-GCM with a key id, bound to their tenant and connection.

A ciphertext is `b"\\x01" + len(key_id) + key_id + nonce(12) + AES-GCM(token)`;
its associated data names the tenant and the connection, so a ciphertext
copied to another tenant's row (or another connection's) does not decrypt.
Keys come from DRIVE_TOKEN_KEYS, `key_id:base64(32 bytes)` separated by
commas: the first encrypts, all decrypt, so rotating is adding a new key in
front, re-encrypting (`python -m quarry.drive.rotate`), then dropping the old.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quarry.paths import REPO_ROOT

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
DEV_KEYS_FILE = "drive-token-keys"


class TokenKeyError(ValueError):
    """DRIVE_TOKEN_KEYS is malformed, or a ciphertext names a key we do not have."""


class TokenDecryptionError(ValueError):
    """The ciphertext is not ours, was altered, or belongs to another tenant or connection."""


def _aad(tenant_id: uuid.UUID, connection_id: uuid.UUID) -> bytes:
    return f"quarry:drive-token:v{VERSION}:{tenant_id}:{connection_id}".encode()


@dataclass(frozen=True)
class TokenCipher:
    keys: Mapping[str, bytes]  # key id → 32-byte key, newest first (dicts keep order)

    def __post_init__(self) -> None:
        if not self.keys:
            raise TokenKeyError("DRIVE_TOKEN_KEYS names no key")

    @property
    def current_key_id(self) -> str:
        return next(iter(self.keys))

    @classmethod
    def parse(cls, raw: str) -> TokenCipher:
        """`id:base64key,id2:base64key` (the first encrypts)."""
        keys: dict[str, bytes] = {}
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            key_id, _, encoded = entry.partition(":")
            if not _KEY_ID.fullmatch(key_id):
                raise TokenKeyError("DRIVE_TOKEN_KEYS: a key id must be 1-32 letters, digits, '_' or '-'")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise TokenKeyError(f"DRIVE_TOKEN_KEYS: key {key_id!r} is not base64") from None
            if len(key) != KEY_BYTES:
                raise TokenKeyError(f"DRIVE_TOKEN_KEYS: key {key_id!r} must be 32 bytes (AES-256), not {len(key)}")
            if key_id in keys:
                raise TokenKeyError(f"DRIVE_TOKEN_KEYS: key id {key_id!r} appears twice")
            keys[key_id] = key
        return cls(keys)

    def encrypt(self, token: str, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> tuple[str, bytes]:
        """(key id, ciphertext) under the newest key."""
        key_id = self.current_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[key_id]).encrypt(nonce, token.encode(), _aad(tenant_id, connection_id))
        encoded_id = key_id.encode()
        return key_id, bytes([VERSION, len(encoded_id)]) + encoded_id + nonce + sealed

    def decrypt(self, ciphertext: bytes, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> str:
        key_id = self.key_id_of(ciphertext)
        key = self.keys.get(key_id)
        if key is None:
            raise TokenKeyError(f"the token is encrypted under key {key_id!r}, which DRIVE_TOKEN_KEYS does not hold")
        start = 2 + len(key_id.encode())
        nonce, sealed = ciphertext[start : start + NONCE_BYTES], ciphertext[start + NONCE_BYTES :]
        try:
            return AESGCM(key).decrypt(nonce, sealed, _aad(tenant_id, connection_id)).decode()
        except InvalidTag:
            raise TokenDecryptionError("the Drive token does not decrypt for this tenant and connection") from None

    @staticmethod
    def key_id_of(ciphertext: bytes) -> str:
        if len(ciphertext) < 2 or ciphertext[0] != VERSION:
            raise TokenDecryptionError("not a Drive token ciphertext of a known version")
        size = ciphertext[1]
        if len(ciphertext) < 2 + size + NONCE_BYTES + 16:
            raise TokenDecryptionError("the Drive token ciphertext is truncated")
        return ciphertext[2 : 2 + size].decode("ascii", errors="replace")


def new_key_entry(key_id: str | None = None) -> str:
    """One `id:base64key` entry with a fresh random key."""
    key_id = key_id or f"k{secrets.token_hex(4)}"
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def load_or_create_dev_keys(dev_dir: Path) -> str:
    """Development only: the keys kept in .dev/ (one generated the first time), 0600."""
    path = dev_dir / DEV_KEYS_FILE
    if path.exists():
        return path.read_text().strip()
    dev_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = new_key_entry("dev1")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(entry + "\n")
    tmp.replace(path)
    return entry


def cipher_for(token_keys: str | None) -> TokenCipher:
    """The keys of DRIVE_TOKEN_KEYS; without it (development only: production requires it), one kept in .dev/."""
    return TokenCipher.parse(token_keys or load_or_create_dev_keys(REPO_ROOT / ".dev"))
