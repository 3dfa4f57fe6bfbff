"""The Drive client against the local Google: a 401 refreshes the access token and the call goes through;
shared drives are asked for the way Google requires (their corpus, their own change log)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quarry.drive.google import ANY_DRIVE, DriveAuthRevoked, DriveClient, DriveError, DriveNotFound
from quarry.settings import DriveSettings
from tests.py.support.google import DRIVE_READONLY, FakeGoogle

REFRESH_TOKEN = "1//test-refresh-token"


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle().start()
    fake.refresh_tokens[REFRESH_TOKEN] = DRIVE_READONLY  # as if the user had consented
    yield fake
    fake.stop()


@pytest.fixture
def client(google: FakeGoogle) -> Iterator[DriveClient]:
    settings = DriveSettings.from_env({**google.env(), "DRIVE_BACKOFF_BASE_MS": "1"}, production=False)
    assert settings is not None
    drive = DriveClient(settings, REFRESH_TOKEN)
    yield drive
    drive.close()


def test_a_401_refreshes_the_access_token_and_the_call_succeeds(google: FakeGoogle, client: DriveClient) -> None:
    folder = google.folder("Refresh")
    refreshes = google.count("POST", "/token")
    assert client.get(folder.id)["name"] == "Refresh"
    assert google.count("POST", "/token") == refreshes + 1, "no token yet: one refresh before the first call"
    gets = google.count("GET", f"/drive/v3/files/{folder.id}")

    google.expire_access_tokens()  # the access token the client holds now answers 401
    assert client.get(folder.id)["name"] == "Refresh"
    assert google.count("POST", "/token") == refreshes + 2, "the 401 made it refresh once"
    assert google.count("GET", f"/drive/v3/files/{folder.id}") == gets + 2, "the 401, then the same call again"
    assert client.retries == 0, "a refresh is not one of the backoff's retries"


def test_a_refused_refresh_after_a_401_is_invalid_grant_without_a_loop(google: FakeGoogle, client: DriveClient) -> None:
    folder = google.folder("Revoked")
    client.get(folder.id)
    refreshes = google.count("POST", "/token")
    google.expire_access_tokens()
    google.invalid_grant = True
    try:
        with pytest.raises(DriveAuthRevoked):
            client.get(folder.id)
    finally:
        google.invalid_grant = False
    assert google.count("POST", "/token") - refreshes <= 2, "invalid_grant is not retried"


def test_a_shared_drive_folder_is_listed_in_its_drive_and_followed_in_its_own_change_log(
    google: FakeGoogle, client: DriveClient
) -> None:
    drive = google.shared_drive("Team")
    folder = google.folder("Team folder", drive)
    inside = google.add("inside.txt", "text/plain", folder.id, b"in the shared drive")
    assert client.get(inside.id)["driveId"] == drive

    # Listed only in its drive's corpus (or all drives), never in the user's.
    assert [f["id"] for f in client.list_children(folder.id, None, drive_id=drive)["files"]] == [inside.id]
    assert [f["id"] for f in client.list_children(folder.id, None, drive_id=ANY_DRIVE)["files"]] == [inside.id]
    assert client.list_children(folder.id, None)["files"] == []

    # Its changes are in the drive's own log, not the user's.
    user_token, drive_token = client.start_page_token(), client.start_page_token(drive)
    google.modify(inside.id, b"changed")
    mine = google.add("mine.txt", "text/plain", None, b"in My Drive")
    assert [c["fileId"] for c in client.changes(drive_token, drive)["changes"]] == [inside.id]
    assert [c["fileId"] for c in client.changes(user_token)["changes"]] == [mine.id]


def test_the_local_google_refuses_what_google_refuses(google: FakeGoogle, client: DriveClient) -> None:
    """The fake holds the client to Google's rules, so a sync that forgot them would fail here."""
    drive = google.shared_drive("Strict")
    hidden = google.add("hidden.txt", "text/plain", drive, b"x")
    with pytest.raises(DriveNotFound):
        client.call(lambda: client.service.files().get(fileId=hidden.id).execute())  # no supportsAllDrives
    with pytest.raises(DriveError):  # all drives without includeItemsFromAllDrives is refused
        client.call(lambda: client.service.files().list(q=f"'{drive}' in parents", corpora="allDrives").execute())
    user = client.call(lambda: client.service.files().list(q=f"'{drive}' in parents").execute())
    assert user["files"] == [], "the user's corpus never holds a shared drive's files"
