"""Every table that holds tenant rows is in the export or excluded with a reason, read from the catalog; the
ZIP writer whose directory waits on disk writes exactly what zipfile writes."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import psycopg

from quarry.exports.archive import EXCLUDED, JSON_FILES, SpoolingZipFile, exported_tables, original_path
from tests.py.support.database import DatabaseUrls

TENANT_TABLES = "select table_name::text from internal.tenant_tables()"


def tenant_tables(conn: psycopg.Connection[tuple[str]]) -> set[str]:
    return {row[0] for row in conn.execute(TENANT_TABLES)}


def test_every_tenant_table_is_exported_or_deliberately_excluded(database: DatabaseUrls) -> None:
    with psycopg.connect(database.admin_url) as conn:
        tables = tenant_tables(conn)
    assert {"app.documents", "app.chunks", "internal.stripe_events"} <= tables, "the catalog query found the tables"
    forgotten = tables - exported_tables() - set(EXCLUDED)
    assert not forgotten, f"neither exported nor listed in EXCLUDED (quarry/exports/archive.py): {sorted(forgotten)}"
    assert not exported_tables() & set(EXCLUDED), "a table is both exported and excluded"
    assert (exported_tables() | set(EXCLUDED)) <= tables, "the archive names a table that does not exist"
    assert all(reason for reason in EXCLUDED.values())


def test_a_new_tenant_table_fails_the_check(database: DatabaseUrls) -> None:
    with psycopg.connect(database.admin_url) as conn:
        conn.execute("create table app.loyalty_points (tenant_id uuid not null, points integer)")
        try:
            forgotten = tenant_tables(conn) - exported_tables() - set(EXCLUDED)
        finally:
            conn.rollback()
    assert forgotten == {"app.loyalty_points"}


def test_file_names_are_unique_and_originals_keep_a_safe_name() -> None:
    names = [spec.name for spec in JSON_FILES]
    assert len(names) == len(set(names)) and "manifest.json" not in names
    assert original_path("d1", "../../etc/passwd") == "originals/d1/_.._etc_passwd"
    assert original_path("d1", "report: Q1?.pdf") == "originals/d1/report_ Q1_.pdf"
    assert original_path("d1", "...") == "originals/d1/original"


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.data += bytes(data)
        return len(data)

    def tell(self) -> int:
        return len(self.data)


def _write(archive: zipfile.ZipFile) -> None:
    for n, compress in enumerate([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]):
        info = zipfile.ZipInfo(f"dir/entry-{n}.json", date_time=(2026, 12, 6, 12, 0, 0))
        info.compress_type = compress
        with archive.open(info, "w", force_zip64=True) as entry:
            entry.write(b"[1, 2, 3]" * (n + 1) * 1000)
    archive.close()


def test_the_spooled_central_directory_is_byte_for_byte_what_zipfile_writes() -> None:
    plain, spooled = _Unseekable(), _Unseekable()
    _write(zipfile.ZipFile(plain, "w", allowZip64=True))
    _write(SpoolingZipFile(spooled))
    assert bytes(spooled.data) == bytes(plain.data)
    assert zipfile.ZipFile(io.BytesIO(bytes(spooled.data))).testzip() is None
