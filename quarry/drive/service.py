"""Drive for the gateway: OAuth (RFC 9700), the connection, folder configs, sync triggers.

OAuth: `authorize` draws a state (256 random bits) and a PKCE verifier, keeps
the state's SHA-256 and the verifier in SQL for ten minutes, bound to the
caller, and answers Google's consent URL (S256 challenge, offline access,
`prompt=consent`, `drive.readonly`).  `complete` consumes the state whatever
happens next (single use), refuses one that is unknown, expired or another
tenant's with a 400 and stores nothing, exchanges the code with the verifier,
and stores a connection only if Google granted `drive.readonly` and a refresh
token; the outcome goes back to the app as a `drive=` flag.

The refresh token is encrypted (quarry.drive.crypto) before it reaches SQL
and decrypted only in this process to call Google; it appears in no
response, log line or error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

import httpx

from quarry.db import TenantDatabase, TenantSession
from quarry.drive.crypto import TokenCipher, cipher_for
from quarry.drive.google import (
    ANY_DRIVE,
    DRIVE_READONLY,
    FOLDER,
    DriveAuthRevoked,
    DriveClient,
    DriveError,
    DriveNotFound,
)
from quarry.drive.models import (
    AuthorizeReply,
    CallbackQuery,
    CreateDriveConfig,
    DriveConfig,
    DriveConfigList,
    DriveConnection,
    DriveFile,
    DriveFileList,
    DriveFolder,
    DriveFolderPage,
    SyncRun,
)
from quarry.errors import Conflict, Invalid, NotFound, QuarryError, Unavailable
from quarry.idempotency import Created, Idempotency, fingerprint
from quarry.principal import Principal
from quarry.settings import DriveSettings

logger = logging.getLogger("quarry.drive")

TOKEN_EXCHANGE_TIMEOUT_SECONDS = 15
STATE_SECONDS = 600  # internal.begin_drive_authorization's ten minutes
COOKIE_PREFIX = "quarry_drive_oauth_"
CALLBACK_PATH = "/api/drive/callback"
CONFIG_COLUMNS = (
    "id, google_folder_id, name, state, last_synced_at, files_seen, files_indexed, files_skipped, files_failed,"
    " last_error, created_at, updated_at"
)
RUN_COLUMNS = (
    "id, folder_id, state, full_crawl, files_seen, files_indexed, files_skipped, files_failed, files_removed, error,"
    " created_at, started_at, finished_at"
)


class InvalidState(QuarryError):
    """The callback's `state` is missing, unknown, expired, used already or another tenant's."""

    status = 400
    slug = "invalid-oauth-state"


class DriveNotConnected(Conflict):
    slug = "drive-not-connected"


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def code_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class BrowserCookie:
    """The cookie that binds an authorization to the browser that started it.

    Its name carries a prefix of the state's hash (several authorizations in one
    browser do not overwrite each other's); its value is random, and the state
    keeps only its SHA-256.  HttpOnly, SameSite=Lax (sent on Google's top-level
    redirect back, never on a cross-site subrequest), only to the callback's
    path, for the state's ten minutes; Secure when the callback is https."""

    name: str
    value: str
    secure: bool
    max_age: int = STATE_SECONDS

    @staticmethod
    def name_for(state: str) -> str:
        return f"{COOKIE_PREFIX}{hashlib.sha256(state.encode()).hexdigest()[:16]}"

    @classmethod
    def for_state(cls, state: str, *, secure: bool) -> BrowserCookie:
        return cls(cls.name_for(state), secrets.token_urlsafe(32), secure)

    @property
    def value_hash(self) -> bytes:
        return hashlib.sha256(self.value.encode()).digest()


@dataclass(frozen=True)
class Authorization:
    reply: AuthorizeReply
    cookie: BrowserCookie | None


@dataclass(frozen=True)
class Connection:
    tenant_id: uuid.UUID
    id: uuid.UUID
    status: str
    refresh_token: str


class Drive:
    """The Drive services of one process (gateway or worker): settings, token keys, Google's clients."""

    def __init__(self, settings: DriveSettings, database: TenantDatabase) -> None:
        self.settings = settings
        self.database = database

    @cached_property
    def cipher(self) -> TokenCipher:
        return cipher_for(self.settings.token_keys)

    # --- the connection and its token

    async def connection(self, tenant_id: uuid.UUID) -> Connection | None:
        row = await self.database.fetch_one("select * from internal.drive_token(%s)", (tenant_id,))
        if row is None:
            return None
        token = self.cipher.decrypt(bytes(row["ciphertext"]), tenant_id, row["id"])
        return Connection(tenant_id, row["id"], str(row["status"]), token)

    async def client_for(self, tenant_id: uuid.UUID) -> tuple[Connection, DriveClient]:
        connection = await self.connection(tenant_id)
        if connection is None or connection.status != "active":
            raise DriveNotConnected(
                "Google Drive is not connected (or needs a new consent): POST /api/drive/authorize first."
            )
        return connection, DriveClient(self.settings, connection.refresh_token)

    async def needs_reauth(self, connection: Connection, reason: str) -> None:
        await self.database.fetch(
            "select internal.drive_needs_reauth(%s, %s, %s)", (connection.tenant_id, connection.id, reason)
        )

    # --- OAuth

    async def authorize(self, session: TenantSession, *, bind_to_browser: bool) -> Authorization:
        """Google's consent URL, and (bound to a browser) the cookie that browser must bring back."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        cookie = (
            BrowserCookie.for_state(state, secure=self.settings.redirect_uri.startswith("https:"))
            if bind_to_browser
            else None
        )
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select internal.begin_drive_authorization(%s, %s, %s) as expires_at",
                (state_hash(state), verifier, cookie.value_hash if cookie else None),
            )
            row = await cursor.fetchone()
        assert row is not None
        query = urlencode(
            {
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_uri,
                "response_type": "code",
                "scope": DRIVE_READONLY,
                "access_type": "offline",
                "prompt": "consent",
                "include_granted_scopes": "false",
                "state": state,
                "code_challenge": code_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        reply = AuthorizeReply(
            url=f"{self.settings.auth_uri}?{query}", expires_at=row["expires_at"], bound_to_browser=cookie is not None
        )
        return Authorization(reply, cookie)

    async def complete(self, query: CallbackQuery, caller: Principal | None, cookies: Mapping[str, str]) -> str:
        """The app URL to send the browser back to, with `drive=connected` or `drive=error&reason=…`."""
        if not query.state:
            raise InvalidState("The callback has no `state`.")
        row = await self.database.fetch_one(
            "select tenant_id, code_verifier, browser_hash from internal.take_drive_authorization(%s)",
            (state_hash(query.state),),
        )
        if row is None:
            raise InvalidState("This authorization is unknown, expired or already used: start again.")
        tenant_id: uuid.UUID = row["tenant_id"]
        if caller is not None and caller.tenant_id != tenant_id:
            raise InvalidState("This authorization was started by another user.")
        if row["browser_hash"] is not None:
            presented = cookies.get(BrowserCookie.name_for(query.state), "")
            if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), bytes(row["browser_hash"])):
                raise InvalidState(
                    "This authorization was started in another browser (or its cookie is gone): start again here."
                )
        if query.error or not query.code:
            return self._back("error", "consent_denied" if query.error == "access_denied" else "no_code")
        try:
            granted = await self._exchange(query.code, str(row["code_verifier"]))
        except DriveError:
            return self._back("error", "exchange_failed")
        scopes = str(granted.get("scope") or "").split()
        refresh_token = granted.get("refresh_token")
        if DRIVE_READONLY not in scopes:
            await self._revoke(refresh_token or granted.get("access_token"))
            return self._back("error", "scope_not_granted")
        if not isinstance(refresh_token, str) or not refresh_token:
            return self._back("error", "no_refresh_token")
        connection_id = uuid.uuid4()
        key_id, ciphertext = self.cipher.encrypt(refresh_token, tenant_id, connection_id)
        await self.database.fetch(
            "select internal.save_drive_connection(%s, %s, %s::text[], %s, %s)",
            (tenant_id, connection_id, scopes, key_id, ciphertext),
        )
        return self._back("connected")

    def _back(self, outcome: str, reason: str | None = None) -> str:
        params = {"drive": outcome, **({"reason": reason} if reason else {})}
        separator = "&" if "?" in self.settings.app_url else "?"
        return f"{self.settings.app_url}{separator}{urlencode(params)}"

    async def _exchange(self, code: str, verifier: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": self.settings.redirect_uri,
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        try:
            async with httpx.AsyncClient(timeout=TOKEN_EXCHANGE_TIMEOUT_SECONDS) as client:
                response = await client.post(self.settings.token_uri, data=form)
        except httpx.HTTPError as error:
            raise DriveError(f"the token exchange failed: {type(error).__name__}") from None
        if response.status_code != 200:
            # Google's error code only (invalid_grant, …), never the body: it could echo a secret.
            logger.warning("Drive token exchange refused (%d)", response.status_code)
            raise DriveError("Google refused the authorization code.")
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise DriveError("Google's token response is not JSON.") from None
        return body

    async def _revoke(self, token: object) -> bool:
        if not isinstance(token, str) or not token:
            return False
        try:
            async with httpx.AsyncClient(timeout=TOKEN_EXCHANGE_TIMEOUT_SECONDS) as client:
                response = await client.post(self.settings.revoke_uri, data={"token": token})
        except httpx.HTTPError:
            logger.warning("revoking a Drive token at Google failed (unreachable)")
            return False
        return response.status_code in (200, 400)  # 400: already invalid

    async def disconnect(self, session: TenantSession) -> None:
        """Revoke the token at Google (best effort), forget it, pause the folders."""
        connection = await self.connection(session.tenant_id)
        if connection is None:
            raise NotFound("Google Drive is not connected.")
        if not await self._revoke(connection.refresh_token):
            logger.warning("Drive token of a disconnected tenant could not be revoked at Google")
        await self.database.fetch("select internal.forget_drive_connection(%s)", (session.tenant_id,))

    async def erase(self, tenant_id: uuid.UUID) -> bool:
        """Account deletion: revoke the tenant's token at Google, then forget the connection.

        Google must confirm (or say the token is invalid already): otherwise this is
        Unavailable and the deletion retries.  False if there was no connection (an earlier run).
        """
        connection = await self.connection(tenant_id)
        if connection is None:
            return False
        if not await self._revoke(connection.refresh_token):
            raise Unavailable("Google did not confirm revoking the Drive token; try again shortly.")
        await self.database.fetch("select internal.forget_drive_connection(%s)", (tenant_id,))
        return True

    async def get_connection(self, session: TenantSession) -> DriveConnection:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select id, status, scopes, created_at, updated_at from api.drive_connection where tenant_id = %s",
                (session.tenant_id,),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound("Google Drive is not connected.")
        return DriveConnection.model_validate(row)

    # --- folders and configs

    async def _ask(self, session: TenantSession, call: Callable[[DriveClient], dict[str, Any]]) -> dict[str, Any]:
        """One Google call for a request: its failures as the request's problems (invalid_grant: needs_reauth)."""
        connection, client = await self.client_for(session.tenant_id)
        try:
            return await asyncio.to_thread(call, client)
        except DriveNotFound:
            raise NotFound("Not found in Google Drive.") from None
        except DriveAuthRevoked:
            await self.needs_reauth(connection, "Google refused the Drive authorization: connect Google Drive again.")
            raise DriveNotConnected("Google refused the Drive authorization: connect Google Drive again.") from None
        except DriveError:
            raise Unavailable("Google Drive is not answering as it should; try again shortly.") from None
        finally:
            client.close()

    async def list_folders(self, session: TenantSession, parent: str | None, cursor: str | None) -> DriveFolderPage:
        page = await self._ask(
            session,
            lambda client: client.list_children(parent or "root", cursor, folders_only=True, drive_id=ANY_DRIVE),
        )
        folders = [DriveFolder(id=item["id"], name=item["name"]) for item in page.get("files", [])]
        return DriveFolderPage(data=folders, next_cursor=page.get("nextPageToken"))

    async def add_config(
        self, session: TenantSession, request: CreateDriveConfig, *, idempotency: Idempotency | None = None
    ) -> Created[DriveConfig]:
        """A folder to sync: checked at Google (it must be a folder), the plan's count checked by SQL.

        With an idempotency key, the same request again answers the config the first one created."""
        try:
            folder = await self._ask(session, lambda client: client.get(request.folder_id))
        except NotFound:
            raise Invalid(
                "No such Drive folder (or it is not shared with you).", extensions={"field": "folder_id"}
            ) from None
        if folder.get("mimeType") != FOLDER or folder.get("trashed"):
            raise Invalid("That Drive file is not a folder.", extensions={"field": "folder_id"})
        async with session.transaction() as conn:
            if idempotency is not None:
                replayed = await idempotency.claim(
                    conn, session.tenant_id, fingerprint(request.model_dump_json()), DriveConfig
                )
                if replayed is not None:
                    return Created(replayed, replayed=True)
            cursor = await conn.execute(
                "insert into app.drive_folders (tenant_id, google_folder_id, name, drive_id)"
                " values (%s, %s, %s, %s) returning id",
                (
                    session.tenant_id,
                    request.folder_id,
                    str(folder.get("name") or request.folder_id)[:1024] or request.folder_id,
                    folder.get("driveId") or None,
                ),
            )
            inserted = await cursor.fetchone()
            assert inserted is not None
            cursor = await conn.execute(
                f"select {CONFIG_COLUMNS} from api.drive_configs where tenant_id = %s and id = %s",  # noqa: S608
                (session.tenant_id, inserted["id"]),
            )
            config = DriveConfig.model_validate(await cursor.fetchone())
            if idempotency is not None:
                await idempotency.complete(conn, session.tenant_id, config, config.id)
        return Created(config)

    async def list_configs(self, session: TenantSession) -> DriveConfigList:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                f"select {CONFIG_COLUMNS} from api.drive_configs where tenant_id = %s"  # noqa: S608 (a constant)
                " order by created_at, id",
                (session.tenant_id,),
            )
            rows = await cursor.fetchall()
        return DriveConfigList(data=[DriveConfig.model_validate(row) for row in rows])

    async def delete_config(self, session: TenantSession, config_id: uuid.UUID, *, keep_documents: bool) -> None:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select internal.remove_drive_folder(%s, %s) as removed", (config_id, keep_documents)
            )
            row = await cursor.fetchone()
        if row is None or not row["removed"]:
            raise NotFound("No such Drive folder config.")

    async def config_files(self, session: TenantSession, config_id: uuid.UUID) -> DriveFileList:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select 1 from api.drive_configs where tenant_id = %s and id = %s", (session.tenant_id, config_id)
            )
            if await cursor.fetchone() is None:
                raise NotFound("No such Drive folder config.")
            cursor = await conn.execute(
                "select file_id, name, mime_type, state, document_id, reason, updated_at from api.drive_files"
                " where tenant_id = %s and folder_id = %s order by name, file_id",
                (session.tenant_id, config_id),
            )
            rows = await cursor.fetchall()
        return DriveFileList(data=[DriveFile.model_validate(row) for row in rows])

    async def trigger(self, session: TenantSession, config_id: uuid.UUID) -> SyncRun:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                f"select {RUN_COLUMNS} from internal.trigger_drive_sync(%s)",  # noqa: S608 (a constant)
                (config_id,),
            )
            row = await cursor.fetchone()
        return SyncRun.model_validate(row)

    async def get_run(self, session: TenantSession, run_id: uuid.UUID) -> SyncRun:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                f"select {RUN_COLUMNS} from api.drive_sync_runs where tenant_id = %s and id = %s",  # noqa: S608
                (session.tenant_id, run_id),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound("No such sync run.")
        return SyncRun.model_validate(row)
