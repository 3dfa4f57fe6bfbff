"""Bad uploads are refused with a clear problem+json before anything is written."""

from __future__ import annotations

import pytest

from tests.py.support.api import Api, GatewayFactory, assert_problem
from tests.py.support.database import DatabaseUrls, Users, admin_count
from tests.py.support.tokens import TokenFactory

ELF_HEADER = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200


def documents_of(database: DatabaseUrls, users: Users) -> int:
    return admin_count(database, "select count(*) from app.documents where tenant_id = %s", users.alice)


def test_empty_file(alice: Api) -> None:
    assert_problem(alice.upload("empty.txt", b""), 422)


def test_no_file_part(alice: Api) -> None:
    response = alice.client.post(
        "/api/documents", headers=alice.headers, data={"title": "x"}, files={"other": ("a", b"b")}
    )
    assert_problem(response, 422)


def test_not_multipart(alice: Api) -> None:
    response = alice.client.post(
        "/api/documents", headers={**alice.headers, "Content-Type": "text/plain"}, content=b"hi"
    )
    assert_problem(response, 415)


def test_two_files(alice: Api) -> None:
    response = alice.client.post(
        "/api/documents", headers=alice.headers, files=[("file", ("a.txt", b"one")), ("file", ("b.txt", b"two"))]
    )
    assert_problem(response, 422)


def test_over_the_cap_is_413_while_streaming(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users, database: DatabaseUrls
) -> None:
    client = make_gateway(UPLOAD_MAX_BYTES="1000")
    api = Api(client, tokens.es256(users.alice), users.alice)
    before = documents_of(database, users)
    body = assert_problem(api.upload("big.txt", b"a" * 5000), 413)
    assert body["limit_bytes"] == 1000
    # A body far over the cap is refused from Content-Length, before it is read.
    assert_problem(api.upload("huge.txt", b"a" * 200_000), 413)
    assert documents_of(database, users) == before


def test_elf_named_pdf_is_refused(alice: Api, database: DatabaseUrls, users: Users) -> None:
    before = documents_of(database, users)
    body = assert_problem(alice.upload("report.pdf", ELF_HEADER), 415)
    assert "ELF" in str(body["detail"]) or "ELF" in str(body.get("detected"))
    assert documents_of(database, users) == before


def test_non_utf8_text_is_refused(alice: Api) -> None:
    assert_problem(alice.upload("notes.txt", "Café crème, déjà vu".encode("latin-1")), 415)


def test_deeply_nested_json_is_refused(alice: Api) -> None:
    assert_problem(alice.upload("deep.json", b"[" * 10_000 + b"]" * 10_000), 415)


def test_zip_with_a_corrupt_deflate_stream_is_refused(alice: Api) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip" * 20)
    data = bytearray(buffer.getvalue())
    start = data.index(b"mimetype") + len(b"mimetype")
    data[start : start + 8] = b"\xff" * 8  # break the compressed bytes, keep the directory
    assert_problem(alice.upload("book.epub", bytes(data)), 415)


def test_binary_garbage_is_refused(alice: Api) -> None:
    assert_problem(alice.upload("data.bin", bytes(range(256)) * 10), 415)


@pytest.mark.parametrize(
    ("filename", "title"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\windows\\system.ini.txt", "system.ini.txt"),
        ("/absolute/path/notes.txt", "notes.txt"),
    ],
)
def test_hostile_filenames_become_safe_titles(alice: Api, filename: str, title: str) -> None:
    response = alice.upload(filename, b"Plain words about granite.")
    assert response.status_code == 202, response.text
    assert response.json()["title"] == title


def test_control_characters_in_a_raw_filename_are_dropped(alice: Api) -> None:
    boundary = "quarry-test-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="bell\x07and\x1bescape\xe2\x80\xaetxt.txt"\r\n'
        + b"Content-Type: text/plain\r\n\r\n"
        + b"Plain words about granite.\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    response = alice.client.post(
        "/api/documents",
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert response.status_code == 202, response.text
    assert response.json()["title"] == "bellandescapetxt.txt"


def test_very_long_unicode_filename(alice: Api) -> None:
    name = "résumé-" + "漢字" * 600 + ".txt"
    response = alice.upload(name, b"Plain words about granite.")
    assert response.status_code == 202, response.text
    title = response.json()["title"]
    assert 0 < len(title) <= 255 and title.startswith("résumé-漢字")


def test_title_field_wins(alice: Api) -> None:
    response = alice.upload("x.txt", b"Plain words.", title="  Quarterly   report  ")
    assert response.json()["title"] == "Quarterly report"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=%C2%B2",  # a superscript two: a digit to str.isdigit, not to int()
        "status=done",
        "source=email",
        "cursor=not-a-cursor",
        "cursor=" + "W" * 5000,
        "cursor=" + "W1tbW1tb" * 25,  # base64 of 150 nested brackets
        "colour=red",
    ],
)
def test_list_rejects_bad_parameters(alice: Api, query: str) -> None:
    assert_problem(alice.get(f"/api/documents?{query}"), 422)


def test_malformed_ids_are_422(alice: Api) -> None:
    for path in ("/api/documents/not-a-uuid", "/api/documents/123/content"):
        assert_problem(alice.get(path), 422)
    assert_problem(alice.delete("/api/documents/not-a-uuid"), 422)


def test_uploads_in_flight_are_capped_per_tenant(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users, database: DatabaseUrls
) -> None:
    gateway = make_gateway(UPLOADS_IN_FLIGHT_PER_TENANT="1")
    alice = Api(gateway, tokens.es256(users.alice, email="alice@example.com"), users.alice)
    bob = Api(gateway, tokens.es256(users.bob, email="bob@example.com"), users.bob)
    before = documents_of(database, users)
    # Alice's one slot is taken by an upload still being received.
    with gateway.app.state.upload_slots.hold(users.alice):  # type: ignore[attr-defined]
        refused = alice.upload("second.txt", b"sent while the first is in flight")
        body = assert_problem(refused, 429, "rate-limited")
        assert refused.headers["Retry-After"] == "1"
        assert body["limit"] == "uploads_in_flight" and body["limit_value"] == 1
        # Refused before the body was read: nothing stored; another tenant is not affected.
        assert documents_of(database, users) == before
        assert bob.upload("bobs.txt", b"another tenant's upload").status_code == 202
    assert alice.upload("third.txt", b"once the first has been answered").status_code == 202
    assert gateway.app.state.upload_slots.in_flight(users.alice) == 0  # type: ignore[attr-defined]


def test_a_refused_upload_frees_its_slot(make_gateway: GatewayFactory, tokens: TokenFactory, users: Users) -> None:
    gateway = make_gateway(UPLOADS_IN_FLIGHT_PER_TENANT="2")
    alice = Api(gateway, tokens.es256(users.alice, email="alice@example.com"), users.alice)
    for _ in range(3):  # more than its two slots: a 4xx must give its slot back
        assert_problem(alice.upload("elf.pdf", ELF_HEADER), 415)
    assert gateway.app.state.upload_slots.in_flight(users.alice) == 0  # type: ignore[attr-defined]
