from __future__ import annotations

from starlette.responses import Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.search.models import SearchRequest, SearchResponse


async def query(call: Call) -> Response:
    return json_response(await call.core.search.search(call.session, call.body(SearchRequest)))


resources = [
    resource(
        "/api/query",
        Operation(
            "POST",
            query,
            summary="Search the caller's documents (hybrid dense + BM25 by default)",
            description=(
                "Dense and BM25 prefetches fused with RRF (k=60) inside the vector engine, always under the caller's"
                " tenant; filters are applied inside the engine.  Every query is recorded in the query log (the"
                " `query_log` view via supabase-js) and counts against the plan's daily queries."
            ),
            body=SearchRequest,
            replies={
                200: Reply(
                    "Ranked results with text, document, position and score (and explain, if asked).", SearchResponse
                )
            },
            problems={402: "The plan's daily query count is used up.", 503: "The vector index is unavailable."},
        ),
    )
]
