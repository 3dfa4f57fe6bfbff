from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.auth.dependencies import authenticate, tenant_transaction
from gateway.documents import service
from gateway.documents.upload import receive_upload
from gateway.errors import Problem
from gateway.settings import Settings
from worker.parsing.errors import UnsupportedDocument
from worker.parsing.sniff import sniff


async def upload_document(request: Request) -> JSONResponse:
    """
    summary: Upload a document (multipart/form-data, part `file`, optional `title`)
    description: >-
      The plan's monthly count and storage are checked before the body is read
      (so an upload that cannot fit is refused at once), the file is streamed
      to disk (never held in memory), its type is sniffed from its content,
      and the document row and its ingest job are written in one transaction,
      with the atomic quota check.  Processing continues in the background; poll
      GET /api/documents/{id} until `status` is `ready` or `failed`.
    requestBody:
      required: true
      content:
        multipart/form-data:
          schema:
            type: object
            required: [file]
            properties:
              file: {type: string, format: binary}
              title: {type: string, maxLength: 255}
    responses:
      202:
        description: Accepted; the document is queued.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Document'}
      402:
        description: The monthly document count or the storage of the plan is used up.
        content:
          application/problem+json:
            schema: {$ref: '#/components/schemas/QuotaExceeded'}
      413: {description: The file is over the upload limit.}
      415:
        description: >-
          Not multipart, the file's content is not a supported format, or the format is not
          in the caller's plan (`plans_allowing` names the plans that include it).
      422: {description: No file, an empty file, or a malformed body.}
      429: {description: Over the hourly rate limit (see Retry-After).}
      503: {description: File storage unavailable.}
    """
    principal = await authenticate(request)
    settings: Settings = request.app.state.settings
    blobs = request.app.state.blobs
    async with tenant_transaction(request, principal) as conn:
        await service.precheck_upload(conn, request.headers.get("content-length"))
    with tempfile.TemporaryDirectory(prefix="quarry-upload-") as workdir:
        upload = await receive_upload(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            destination=Path(workdir) / "upload",
            max_bytes=settings.upload_max_bytes,
        )
        try:
            sniffed = await asyncio.to_thread(sniff, upload.path, upload.filename)
        except UnsupportedDocument as error:
            extensions = {"detected": error.detected} if error.detected else {}
            raise Problem(415, "unsupported-document", error.reason, extensions=extensions) from None
        document_id = uuid.uuid4()
        key = await service.store_blob(blobs, principal.tenant_id, document_id, upload)
        try:
            async with tenant_transaction(request, principal) as conn:
                document = await service.insert_document(conn, document_id, upload, sniffed, key)
        except BaseException:
            await service.discard_blob(blobs, key)
            raise
    return JSONResponse(document, status_code=202, headers={"Location": f"/api/documents/{document_id}"})


async def list_documents(request: Request) -> JSONResponse:
    """
    summary: List the caller's documents, newest first (cursor pagination)
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
      - {name: cursor, in: query, schema: {type: string}, description: next_cursor of the previous page}
      - {name: status, in: query, schema: {type: string, enum: [queued, processing, indexing, ready, failed]}}
      - {name: source, in: query, schema: {type: string, enum: [upload, drive]}}
    responses:
      200:
        description: A page of documents.
        content:
          application/json:
            schema:
              type: object
              properties:
                data: {type: array, items: {$ref: '#/components/schemas/Document'}}
                next_cursor: {type: [string, "null"]}
      422: {description: An invalid parameter.}
    """
    principal = await authenticate(request)
    query = service.parse_list_query(dict(request.query_params))
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse(await service.list_documents(conn, query))


async def get_document(request: Request) -> JSONResponse:
    """
    summary: One document - status, error reason, size, type, page and chunk counts, timestamps
    parameters:
      - {name: document_id, in: path, required: true, schema: {type: string, format: uuid}}
    responses:
      200:
        description: The document.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Document'}
      404: {description: No such document (or not yours).}
      422: {description: The id is not a UUID.}
    """
    principal = await authenticate(request)
    document_id = service.parse_document_id(request.path_params["document_id"])
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse(await service.get_document(conn, document_id))


async def delete_document(request: Request) -> Response:
    """
    summary: Delete a document, its chunks, its vectors and its stored file
    description: >-
      The row and chunks go at once; the vectors and the stored file follow
      through the outbox within moments.
    parameters:
      - {name: document_id, in: path, required: true, schema: {type: string, format: uuid}}
    responses:
      204: {description: Deleted.}
      404: {description: No such document (or not yours).}
      422: {description: The id is not a UUID.}
    """
    principal = await authenticate(request)
    document_id = service.parse_document_id(request.path_params["document_id"])
    async with tenant_transaction(request, principal) as conn:
        await service.delete_document(conn, document_id)
    return Response(status_code=204)


async def get_document_content(request: Request) -> PlainTextResponse:
    """
    summary: The document's processed (extracted and cleaned) text
    parameters:
      - {name: document_id, in: path, required: true, schema: {type: string, format: uuid}}
    responses:
      200:
        description: The text, UTF-8.
        content:
          text/plain: {schema: {type: string}}
      404: {description: No such document (or not yours).}
      409: {description: Not processed yet.}
      422: {description: The id is not a UUID.}
    """
    principal = await authenticate(request)
    document_id = service.parse_document_id(request.path_params["document_id"])
    async with tenant_transaction(request, principal) as conn:
        text = await service.document_content(conn, document_id)
    return PlainTextResponse(text)


routes = [
    Route("/api/documents", upload_document, methods=["POST"]),
    Route("/api/documents", list_documents, methods=["GET"]),
    Route("/api/documents/{document_id}", get_document, methods=["GET"]),
    Route("/api/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/api/documents/{document_id}/content", get_document_content, methods=["GET"]),
]
