"""Re-encrypt every Drive refresh token under the newest key of DRIVE_TOKEN_KEYS.

    python -m quarry.drive.rotate      # after putting a new key first in DRIVE_TOKEN_KEYS

Runs as the worker's login (WORKER_DATABASE_URL), in batches; a token
replaced meanwhile (a new consent) is left alone (compare-and-set).  Once it
reports nothing left to rotate, the old key can be dropped from the setting.
Prints counts only, never a token.
"""

from __future__ import annotations

import sys

import psycopg
from psycopg.rows import dict_row

from quarry.drive.crypto import TokenCipher, cipher_for
from quarry.settings import Settings

BATCH = 200


def rotate(conninfo: str, cipher: TokenCipher) -> tuple[int, int]:
    """(re-encrypted, skipped because they changed meanwhile)."""
    newest = cipher.current_key_id
    rotated = skipped = 0
    seen: set[tuple[object, object]] = set()
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        while True:
            rows = conn.execute("select * from internal.drive_tokens_to_rotate(%s, %s)", (newest, BATCH)).fetchall()
            rows = [row for row in rows if (row["tenant_id"], row["id"]) not in seen]
            if not rows:
                return rotated, skipped
            for row in rows:
                seen.add((row["tenant_id"], row["id"]))
                old = bytes(row["ciphertext"])
                token = cipher.decrypt(old, row["tenant_id"], row["id"])
                key_id, ciphertext = cipher.encrypt(token, row["tenant_id"], row["id"])
                replaced = conn.execute(
                    "select internal.replace_drive_token(%s, %s, %s, %s, %s) as ok",
                    (row["tenant_id"], row["id"], old, key_id, ciphertext),
                ).fetchone()
                if replaced and replaced["ok"]:
                    rotated += 1
                else:
                    skipped += 1


def main() -> int:
    settings = Settings.from_env()
    if settings.drive is None:
        print("Drive is turned off (DRIVE=off): nothing to rotate", file=sys.stderr)
        return 1
    if settings.worker_database_url is None:
        print("WORKER_DATABASE_URL must be set", file=sys.stderr)
        return 1
    cipher = cipher_for(settings.drive.token_keys)
    rotated, skipped = rotate(settings.worker_database_url, cipher)
    print(f"drive tokens re-encrypted under key {cipher.current_key_id!r}: {rotated} (changed meanwhile: {skipped})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
