from __future__ import annotations

from starlette.responses import PlainTextResponse, Response

from gateway.documents.slots import UploadSlots
from gateway.documents.upload import UPLOAD_REQUEST_BODY, MultipartUpload
from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.documents import service
from quarry.documents.models import Document, DocumentListQuery, DocumentPage


async def upload_document(call: Call) -> Response:
    request = call.request
    slots: UploadSlots = request.app.state.upload_slots
    with slots.hold(call.session.tenant_id):
        upload = MultipartUpload(
            request.headers.get("content-type"), request.headers.get("content-length"), request.stream()
        )
        created = await call.core.documents.create(call.session, upload, idempotency=call.idempotency)
    return call.created(created, headers={"Location": f"/api/documents/{created.value.id}"})


async def list_documents(call: Call) -> Response:
    return json_response(await service.list_documents(call.session, call.query(DocumentListQuery)))


async def get_document(call: Call) -> Response:
    return json_response(await service.get_document(call.session, call.id("document_id")))


async def delete_document(call: Call) -> Response:
    await service.delete_document(call.session, call.id("document_id"))
    return Response(status_code=204)


async def get_document_content(call: Call) -> Response:
    return PlainTextResponse(await service.document_content(call.session, call.id("document_id")))


DOCUMENT_ID = {"document_id": "the document's id"}

resources = [
    resource(
        "/api/documents",
        Operation(
            "POST",
            upload_document,
            summary="Upload a document (multipart/form-data, part `file`, optional `title`)",
            description=(
                "The plan's monthly count and storage are checked before the body is read (so an upload that cannot"
                " fit is refused at once), the file is streamed to disk (never held in memory), its type is sniffed"
                " from its content, and the document row and its ingest job are written in one transaction, with the"
                " atomic quota check.  Processing continues in the background; poll GET /api/documents/{id} until"
                " `status` is `ready` or `failed`."
            ),
            raw_body=UPLOAD_REQUEST_BODY,
            idempotent=True,
            replies={202: Reply("Accepted; the document is queued.", Document, headers={"Location": "its URL"})},
            problems={
                400: "The multipart body cannot be parsed.",
                402: "The monthly document count or the storage of the plan is used up.",
                413: "The file is over the upload limit.",
                415: (
                    "Not multipart, the file's content is not a supported format, or the format is not in the"
                    " caller's plan (`plans_allowing` names the plans that include it)."
                ),
                422: "No file, an empty file, or a title over 255 characters.",
                429: (
                    "Over the hourly request limit, or `UPLOADS_IN_FLIGHT_PER_TENANT` of the caller's uploads are"
                    " still in progress on this server (`limit: uploads_in_flight`; retry after `Retry-After`)."
                ),
            },
        ),
        Operation(
            "GET",
            list_documents,
            summary="List the caller's documents, newest first (cursor pagination)",
            query=DocumentListQuery,
            replies={200: Reply("A page of documents.", DocumentPage)},
            problems={422: "An invalid parameter, or a cursor this API did not issue."},
        ),
    ),
    resource(
        "/api/documents/{document_id}",
        Operation(
            "GET",
            get_document,
            summary="One document: status, error reason, size, type, page and chunk counts, timestamps",
            path_ids=DOCUMENT_ID,
            replies={200: Reply("The document.", Document)},
            problems={404: "No such document (or not yours)."},
        ),
        Operation(
            "DELETE",
            delete_document,
            summary="Delete a document, its chunks, its vectors and its stored file",
            description="The row and chunks go at once; the vectors and the stored file follow through the outbox.",
            path_ids=DOCUMENT_ID,
            replies={204: Reply("Deleted.")},
            problems={404: "No such document (or not yours)."},
        ),
    ),
    resource(
        "/api/documents/{document_id}/content",
        Operation(
            "GET",
            get_document_content,
            summary="The document's processed (extracted and cleaned) text",
            path_ids=DOCUMENT_ID,
            replies={200: Reply("The text, UTF-8.", media_type="text/plain", schema={"type": "string"})},
            problems={404: "No such document (or not yours).", 409: "Not processed yet."},
        ),
    ),
]
