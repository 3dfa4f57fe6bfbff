from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from gateway.auth.authenticate import authenticate
from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.drive.models import (
    AuthorizeReply,
    CallbackQuery,
    CreateDriveConfig,
    DeleteConfigQuery,
    DriveConfig,
    DriveConfigList,
    DriveConnection,
    DriveFileList,
    DriveFolderPage,
    FoldersQuery,
    SyncRun,
)
from quarry.drive.service import CALLBACK_PATH, BrowserCookie, Drive
from quarry.errors import Unavailable

NO_STORE = {"Cache-Control": "no-store"}


def drive(call: Call) -> Drive:
    if call.core.drive is None:
        raise Unavailable("Google Drive is turned off on this server (DRIVE=off).", retry_after=3600)
    return call.core.drive


async def authorize_drive(call: Call) -> Response:
    # A session's JWT is a browser: bound to it by a cookie.  An API key is a server's flow.
    assert call.principal is not None
    authorization = await drive(call).authorize(call.session, bind_to_browser=call.principal.api_key_id is None)
    response = json_response(authorization.reply, headers=NO_STORE)
    if (cookie := authorization.cookie) is not None:
        response.set_cookie(
            cookie.name,
            cookie.value,
            max_age=cookie.max_age,
            path=CALLBACK_PATH,
            secure=cookie.secure,
            httponly=True,
            samesite="lax",
        )
    return response


async def drive_callback(call: Call) -> Response:
    # Public: the browser arrives from Google.  A caller that does authenticate must be the state's tenant.
    caller = await authenticate(call.request) if call.request.headers.get("authorization") else None
    query = call.query(CallbackQuery)
    location = await drive(call).complete(query, caller, call.request.cookies)
    response = RedirectResponse(location, status_code=303, headers=NO_STORE)
    if query.state:
        response.delete_cookie(BrowserCookie.name_for(query.state), path=CALLBACK_PATH, httponly=True, samesite="lax")
    return response


async def get_drive_connection(call: Call) -> Response:
    return json_response(await drive(call).get_connection(call.session))


async def delete_drive_connection(call: Call) -> Response:
    await drive(call).disconnect(call.session)
    return Response(status_code=204)


async def list_drive_folders(call: Call) -> Response:
    query = call.query(FoldersQuery)
    return json_response(await drive(call).list_folders(call.session, query.parent, query.cursor))


async def create_drive_config(call: Call) -> Response:
    created = await drive(call).add_config(call.session, call.body(CreateDriveConfig), idempotency=call.idempotency)
    return call.created(created, headers={"Location": f"/api/drive/configs/{created.value.id}"})


async def list_drive_configs(call: Call) -> Response:
    return json_response(await drive(call).list_configs(call.session))


async def delete_drive_config(call: Call) -> Response:
    keep = call.query(DeleteConfigQuery).keep_documents == "true"
    await drive(call).delete_config(call.session, call.id("config_id"), keep_documents=keep)
    return Response(status_code=204)


async def list_drive_config_files(call: Call) -> Response:
    return json_response(await drive(call).config_files(call.session, call.id("config_id")))


async def trigger_drive_sync(call: Call) -> Response:
    run = await drive(call).trigger(call.session, call.id("config_id"))
    return json_response(run, status_code=202, headers={"Location": f"/api/drive/runs/{run.id}"})


async def get_drive_run(call: Call) -> Response:
    return json_response(await drive(call).get_run(call.session, call.id("run_id")))


CONFIG_ID = {"config_id": "the folder config's id"}
NOT_CONNECTED = "Google Drive is not connected, or needs a new consent."

resources = [
    resource(
        "/api/drive/authorize",
        Operation(
            "POST",
            authorize_drive,
            summary="Start connecting Google Drive: the consent URL to send the browser to",
            description=(
                "PKCE (S256), offline access, `prompt=consent`, scope `drive.readonly`; the `state` is random,"
                " single-use, bound to the caller and valid for 10 minutes (only its hash is stored).  Called with"
                " a session's JWT (a browser), the reply also sets an HttpOnly, SameSite=Lax cookie for the"
                " callback's path: the consent must be completed in that browser.  Called with an API key (a"
                " server's flow), the state alone binds it (`bound_to_browser: false`): hand the consent URL only"
                " to the user who asked for it."
            ),
            replies={200: Reply("Google's consent URL (and, for a session's JWT, the cookie).", AuthorizeReply)},
            problems={429: "Too many authorizations pending."},
        ),
    ),
    resource(
        "/api/drive/callback",
        Operation(
            "GET",
            drive_callback,
            summary="Where Google sends the browser back: stores the connection, redirects to the app",
            description=(
                "Redirects (303) to the app URL with `drive=connected`, or `drive=error&reason=consent_denied|"
                "scope_not_granted|no_refresh_token|exchange_failed|no_code` (no connection is stored then).  If the"
                " request authenticates, the caller must be the user who started the authorization."
            ),
            query=CallbackQuery,
            public=True,
            replies={303: Reply("Back to the app.", headers={"Location": "the app URL with the outcome"})},
            problems={
                400: (
                    "The `state` is missing, unknown, expired, used already or another user's, or the browser"
                    " that started it is not this one."
                ),
                401: "Credentials were sent and are not valid.",
            },
        ),
    ),
    resource(
        "/api/drive/connection",
        Operation(
            "GET",
            get_drive_connection,
            summary="The Drive connection: status and scopes (never the token)",
            description="supabase-js reads the same row from the `drive_connection` view.",
            replies={200: Reply("The connection.", DriveConnection)},
            problems={404: "Google Drive is not connected."},
        ),
        Operation(
            "DELETE",
            delete_drive_connection,
            summary="Disconnect Google Drive: revoke the token at Google, delete it, pause the folders",
            replies={204: Reply("Disconnected.")},
            problems={404: "Google Drive is not connected."},
        ),
    ),
    resource(
        "/api/drive/folders",
        Operation(
            "GET",
            list_drive_folders,
            summary="The caller's Drive folders under `parent` (to pick one to sync)",
            query=FoldersQuery,
            replies={200: Reply("A page of folders.", DriveFolderPage)},
            problems={404: "No such parent folder.", 409: NOT_CONNECTED, 503: "Google Drive is not answering."},
        ),
    ),
    resource(
        "/api/drive/configs",
        Operation(
            "POST",
            create_drive_config,
            summary="Sync a Drive folder (it must exist and be a folder; the plan limits how many)",
            description=(
                "A folder in a shared drive is followed through that drive's own change log (`drive_id`)."
                "  With an `Idempotency-Key`, the same request again answers the config the first one created."
            ),
            body=CreateDriveConfig,
            idempotent=True,
            replies={201: Reply("The folder config.", DriveConfig, headers={"Location": "its URL"})},
            problems={
                402: "The plan's Drive folder limit is reached (`limit`: `drive_folders`).",
                409: f"{NOT_CONNECTED}  Or the folder is synced already.",
                422: "No such folder, or not a folder.",
                503: "Google Drive is not answering.",
            },
        ),
        Operation(
            "GET",
            list_drive_configs,
            summary="The synced folders: state, last sync, counts seen/indexed/skipped/failed, last error",
            description="supabase-js reads the same rows from the `drive_configs` view.",
            replies={200: Reply("The folder configs.", DriveConfigList)},
        ),
    ),
    resource(
        "/api/drive/configs/{config_id}",
        Operation(
            "DELETE",
            delete_drive_config,
            summary="Stop syncing a folder; its documents are deleted unless `keep_documents=true`",
            query=DeleteConfigQuery,
            path_ids=CONFIG_ID,
            replies={204: Reply("Removed.")},
            problems={404: "No such folder config (or not yours)."},
        ),
    ),
    resource(
        "/api/drive/configs/{config_id}/files",
        Operation(
            "GET",
            list_drive_config_files,
            summary="Every file the folder's syncs saw: its document, or why it was skipped",
            description="supabase-js reads the same rows from the `drive_files` view.",
            path_ids=CONFIG_ID,
            replies={200: Reply("The files.", DriveFileList)},
            problems={404: "No such folder config (or not yours)."},
        ),
    ),
    resource(
        "/api/drive/sync/{config_id}/trigger",
        Operation(
            "POST",
            trigger_drive_sync,
            summary="Sync a folder now (one run per folder at a time: the queued or running one is answered)",
            description="supabase-js: `rpc('trigger_drive_sync', {folder_id})`.",
            path_ids=CONFIG_ID,
            replies={202: Reply("The run.", SyncRun, headers={"Location": "the run's URL"})},
            problems={404: "No such folder config (or not yours).", 409: NOT_CONNECTED},
        ),
    ),
    resource(
        "/api/drive/runs/{run_id}",
        Operation(
            "GET",
            get_drive_run,
            summary="One sync run: state and counts",
            description="supabase-js reads the same rows from the `drive_sync_runs` view.",
            path_ids={"run_id": "the run's id"},
            replies={200: Reply("The run.", SyncRun)},
            problems={404: "No such run (or not yours)."},
        ),
    ),
]
