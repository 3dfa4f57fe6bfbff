from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.auth.dependencies import authenticate, tenant_transaction
from gateway.errors import Problem
from gateway.index.base import IndexHit, IndexUnavailable
from gateway.json_body import read_json
from gateway.search.service import Timings, hydrate, parse_request, record_query, run_search
from gateway.services import IndexHandle
from gateway.settings import Settings


async def query(request: Request) -> JSONResponse:
    """
    summary: Search the caller's documents (hybrid dense + BM25 by default)
    description: >-
      Dense and BM25 prefetches fused with RRF (k=60) inside the vector engine,
      always under the caller's tenant; filters are applied inside the engine.
      Every query is recorded in the query log (GET api.query_log via supabase-js).
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [query]
            properties:
              query: {type: string, maxLength: 1000}
              top_k: {type: integer, minimum: 1, maximum: 50, default: 10}
              mode: {type: string, enum: [hybrid, dense, sparse], default: hybrid}
              explain: {type: boolean, default: false}
              filters:
                type: object
                properties:
                  document_ids: {type: array, items: {type: string, format: uuid}, maxItems: 100}
                  source: {type: string, enum: [upload, drive]}
                  mime_types: {type: array, items: {type: string}, maxItems: 100}
                  created_from: {type: string, format: date-time}
                  created_to: {type: string, format: date-time}
    responses:
      200:
        description: Ranked results with text, document, position and score (and explain, if asked).
      400: {description: The body is not JSON.}
      402:
        description: The plan's daily query count is used up.
        content:
          application/problem+json:
            schema: {$ref: '#/components/schemas/QuotaExceeded'}
      422: {description: An invalid field.}
      429: {description: Over the hourly rate limit (see Retry-After).}
      503: {description: The vector index is unavailable.}
    """
    principal = await authenticate(request)
    search_request = parse_request(await read_json(request))
    settings: Settings = request.app.state.settings
    timings = Timings()
    index_handle: IndexHandle = request.app.state.index

    def embed_and_search() -> list[IndexHit]:
        index = index_handle.get()
        return run_search(
            index,
            principal.tenant_id,
            search_request,
            settings.embedding_model_dir,
            settings.model_cache_dir,
            timings,
        )

    # The model works while the query is logged (the log is the gate: a refusal there drops the hits).
    searching = asyncio.ensure_future(asyncio.to_thread(embed_and_search))
    try:
        async with tenant_transaction(request, principal) as conn:
            log_id = await record_query(conn, search_request, principal.api_key_id)
    except BaseException:
        await asyncio.gather(searching, return_exceptions=True)
        raise
    try:
        hits = await searching
    except IndexUnavailable:
        raise Problem(503, "index-unavailable", "Search is unavailable for a moment; try again shortly.") from None
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse(await hydrate(conn, hits, search_request, log_id, timings))


routes = [Route("/api/query", query, methods=["POST"])]
