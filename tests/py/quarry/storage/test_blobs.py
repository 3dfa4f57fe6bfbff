"""One suite for both blob stores: a local directory and S3 (moto's real HTTP server)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from quarry.storage import blobs
from quarry.storage.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, LocalBlobStore, S3BlobStore, blob_key
from tests.py.support.net import free_port
from tests.py.support.s3 import REGION, moto_server, use_fake_aws

MIB = 1024 * 1024


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_fake_aws(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    request.getfixturevalue("aws_env")
    moto_url: str = request.getfixturevalue("moto_url")
    bucket = f"quarry-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION).create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, endpoint_url=moto_url, region=REGION)


@pytest.fixture
def key() -> str:
    return blob_key(uuid.uuid4(), uuid.uuid4())


def test_blob_keys_come_from_ids_only() -> None:
    tenant, document = uuid.uuid4(), uuid.uuid4()
    assert blob_key(tenant, document) == f"documents/{tenant}/{document}"
    assert blob_key(tenant, document, 3) == f"documents/{tenant}/{document}-r3"  # a revision's own file
    with pytest.raises(TypeError):
        blob_key(str(tenant), document)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        blob_key(tenant, document, -1)


def test_round_trip_of_a_multi_mebibyte_file(store: BlobStore, key: str, tmp_path: Path) -> None:
    original = tmp_path / "upload.bin"
    # Above boto3's 8 MiB multipart threshold, so S3 takes the multipart path.
    digest = write_random(original, 9 * MIB + 123)
    store.put_file(key, original)

    assert store.exists(key)
    downloaded = tmp_path / "out" / "copy.bin"
    store.download_to(key, downloaded)
    assert sha256(downloaded) == digest
    assert sorted(p.name for p in downloaded.parent.iterdir()) == ["copy.bin"]


def test_put_overwrites(store: BlobStore, key: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_random(first, 1000)
    digest = write_random(second, 2000)
    store.put_file(key, first)
    store.put_file(key, second)

    store.download_to(key, tmp_path / "copy")
    assert sha256(tmp_path / "copy") == digest


def test_delete_is_idempotent(store: BlobStore, key: str, tmp_path: Path) -> None:
    write_random(tmp_path / "file", 100)
    store.put_file(key, tmp_path / "file")

    store.delete(key)
    store.delete(key)
    store.delete(blob_key(uuid.uuid4(), uuid.uuid4()))

    assert not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.download_to(key, tmp_path / "copy")


def test_delete_prefix_removes_one_tenants_blobs_only(store: BlobStore, tmp_path: Path) -> None:
    tenant, neighbour = uuid.uuid4(), uuid.uuid4()
    write_random(tmp_path / "file", 100)
    keys = [blob_key(tenant, uuid.uuid4()) for _ in range(3)]
    for key in [*keys, blob_key(neighbour, uuid.uuid4())]:
        store.put_file(key, tmp_path / "file")

    assert store.delete_prefix(f"documents/{tenant}") == 3
    assert store.delete_prefix(f"documents/{tenant}") == 0  # idempotent
    assert not any(store.exists(key) for key in keys)
    assert store.delete_prefix(f"documents/{neighbour}") == 1
    with pytest.raises(ValueError, match="invalid blob key"):
        store.delete_prefix("documents/../x")


def test_missing_blob(store: BlobStore, key: str, tmp_path: Path) -> None:
    assert not store.exists(key)
    destination = tmp_path / "existing"
    destination.write_bytes(b"kept")
    with pytest.raises(BlobNotFound):
        store.download_to(key, destination)
    # A failed download leaves the destination as it was, and no partial file beside it.
    assert destination.read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD_KEYS = [
    "",
    "../escape",
    "documents/../../escape",
    "/absolute",
    "documents//double",
    "documents/trailing/",
    "documents/./dot",
    "documents/.hidden",
    "documents/with space",
    "documents\\backslash",
    "documents/nul\x00byte",
    "documents/ünicode",
    "a" * 1025,
]


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_invalid_keys_are_refused(store: BlobStore, bad_key: str, tmp_path: Path) -> None:
    source = tmp_path / "file"
    source.write_bytes(b"data")
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put_file(bad_key, source)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.download_to(bad_key, tmp_path / "copy")
    with pytest.raises(ValueError, match="invalid blob key"):
        store.delete(bad_key)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.exists(bad_key)


def test_local_store_never_writes_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root" / "blobs"
    store = LocalBlobStore(root)
    source = tmp_path / "file"
    source.write_bytes(b"data")
    for bad_key in ("../escape", "../../escape", "x/../../escape"):
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put_file(bad_key, source)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file"]


def test_local_put_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    old, new = tmp_path / "old", tmp_path / "new"
    digest = write_random(old, 4000)
    write_random(new, 4000)
    store.put_file(key, old)

    def fail_half_way(source: Path, destination: Path, *, durable: bool) -> None:
        destination.write_bytes(source.read_bytes()[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobs, "_copy", fail_half_way)
    with pytest.raises(BlobStoreUnavailable, match="No space left"):
        store.put_file(key, new)

    monkeypatch.undo()
    store.download_to(key, tmp_path / "copy")
    assert sha256(tmp_path / "copy") == digest
    blob_dir = (tmp_path / "blobs" / key).parent
    assert [p.name for p in blob_dir.iterdir()] == [key.rsplit("/", 1)[1]]


def test_missing_source_file_is_the_callers_error(store: BlobStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file(key, tmp_path / "nothing-here")


@pytest.mark.usefixtures("aws_env")
def test_unreachable_s3_is_unavailable(tmp_path: Path, key: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = S3BlobStore("quarry-test", client=client)
    source = tmp_path / "file"
    source.write_bytes(b"data")

    with pytest.raises(BlobStoreUnavailable, match="unreachable"):
        store.put_file(key, source)
    with pytest.raises(BlobStoreUnavailable):
        store.download_to(key, tmp_path / "copy")
    with pytest.raises(BlobStoreUnavailable):
        store.exists(key)
    with pytest.raises(BlobStoreUnavailable):
        store.delete(key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
