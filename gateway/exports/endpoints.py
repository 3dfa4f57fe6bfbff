from __future__ import annotations

from starlette.responses import FileResponse, RedirectResponse, Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.exports.models import Export, ExportList

NO_STORE = {"Cache-Control": "no-store"}


async def request_export(call: Call) -> Response:
    created = await call.core.exports.request(call.session, idempotency=call.idempotency)
    return call.created(created, headers={"Location": f"/api/export/{created.value.id}"})


async def list_exports(call: Call) -> Response:
    return json_response(await call.core.exports.list(call.session), headers=NO_STORE)


async def get_export(call: Call) -> Response:
    return json_response(await call.core.exports.get(call.session, call.id("export_id")), headers=NO_STORE)


async def download_export(call: Call) -> Response:
    path, name, link = await call.core.exports.archive_path(call.session, call.id("export_id"))
    if path is None:
        assert link is not None
        return RedirectResponse(link, status_code=303, headers=NO_STORE)
    return FileResponse(
        path,
        media_type="application/zip",
        filename=name,
        content_disposition_type="attachment",
        headers=NO_STORE,
    )


ZIP_SCHEMA = {"type": "string", "format": "binary"}

resources = [
    resource(
        "/api/export",
        Operation(
            "POST",
            request_export,
            summary="Request an export of all your data (GDPR Art. 20): a ZIP, built in the background and emailed",
            description=(
                "The archive holds manifest.json (row counts and SHA-256 of every file), documents.json (metadata and"
                " text), chunks.json, drive_configs.json, api_keys.json (never secrets), query_log.json,"
                " subscription.json, usage.json, audit_log.json and originals/ (your files, byte for byte).  Poll"
                " `GET /api/export/{id}`; the link is emailed too and expires after EXPORT_LINK_EXPIRY_DAYS (7)."
                "  Free: one export a month, Pro: one a week, Enterprise: no limit.  supabase-js:"
                " `rpc('request_export')` and the `exports` view."
            ),
            idempotent=True,
            replies={202: Reply("Queued.", Export, headers={"Location": "the export's URL"})},
            problems={
                402: "The plan's export frequency is used up (`resets_at`: when the next export is allowed).",
                409: "An export is already queued or running (`export_id`, `export_status`).",
            },
        ),
        Operation(
            "GET",
            list_exports,
            summary="The caller's exports, newest first (at most 100)",
            replies={200: Reply("The exports.", ExportList)},
        ),
    ),
    resource(
        "/api/export/{export_id}",
        Operation(
            "GET",
            get_export,
            summary="One export: status (queued, running with progress, ready, failed with a reason, expired)",
            description="When ready: `download_url`, `size_bytes`, `counts` and `expires_at`.",
            path_ids={"export_id": "the export's id"},
            replies={200: Reply("The export.", Export)},
            problems={404: "No such export (or not yours)."},
        ),
    ),
    resource(
        "/api/export/{export_id}/download",
        Operation(
            "GET",
            download_export,
            summary="Download a ready export's archive (its owner only)",
            description=(
                "With the local store the gateway sends the ZIP (`Content-Disposition: attachment`); with S3 it"
                " answers 303 to a fresh presigned link that expires with the export."
            ),
            path_ids={"export_id": "the export's id"},
            replies={
                200: Reply("The archive.", media_type="application/zip", schema=ZIP_SCHEMA),
                303: Reply("With S3: where to download it.", headers={"Location": "a presigned link"}),
            },
            problems={404: "No such export (or not yours).", 409: "The export is not ready (or has expired)."},
        ),
    ),
]
