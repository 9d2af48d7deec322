"""``file_search``: the model searches the caller's vector stores (hybrid retrieval).

Searches run through the vector-store service under the caller's project only, so another
tenant's store id is a 404 when the response is created and its chunks can never reach the
prompt (RELIABILITY A1, A2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rixin.agents.tools.base import (
    BaseTool,
    BuildContext,
    JSONDict,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolOutput,
    VectorSearch,
)
from rixin.errors import InvalidRequest, UnsupportedParameter

MAX_SNIPPET_CHARS = 2000
_PARAMETERS: JSONDict = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What to search for."}},
    "required": ["query"],
}


@dataclass
class FileSearchTool(BaseTool):
    search: VectorSearch | None = None
    vector_store_ids: list[str] = field(default_factory=list)
    max_num_results: int = 10
    filters: JSONDict | None = None
    ranking_options: JSONDict | None = None

    def call_item(self, call: ToolCall, item_id: str, status: str) -> JSONDict:
        query = call.parsed().get("query") if status != "in_progress" else None
        return {
            "id": item_id,
            "type": "file_search_call",
            "status": status,
            "queries": [str(query)] if query else [],
            "results": None,
        }

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        assert self.search is not None
        query = str(call.parsed().get("query") or "").strip()
        if not query:
            return ToolOutput("The search query was empty.", {"queries": []}, failed=True)
        hits: list[JSONDict] = []
        for store_id in self.vector_store_ids:
            hits.extend(
                await self.search(
                    ctx.project_id,
                    store_id,
                    query,
                    self.max_num_results,
                    self.filters,
                    self.ranking_options,
                )
            )
        hits.sort(key=lambda h: -float(h.get("score", 0.0)))
        hits = hits[: self.max_num_results]
        results = [
            {
                "file_id": h["file_id"],
                "filename": h.get("filename", ""),
                "score": float(h.get("score", 0.0)),
                "text": str(h.get("text", ""))[:MAX_SNIPPET_CHARS],
                "attributes": h.get("attributes") or {},
            }
            for h in hits
        ]
        if results:
            text = "\n\n".join(
                f"[{i + 1}] {r['filename']}: {r['text']}" for i, r in enumerate(results)
            )
        else:
            text = "No results found."
        return ToolOutput(text, {"queries": [query], "results": results})


async def build(spec: JSONDict, ctx: BuildContext) -> ToolBundle:
    if ctx.vector_search is None:
        raise UnsupportedParameter("file_search is not available on this server.", param="tools")
    ids = spec.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise InvalidRequest(
            "file_search needs 'vector_store_ids', a non-empty list of ids.",
            param="tools.vector_store_ids",
        )
    if ctx.vector_store_check is not None:
        for store_id in ids:
            await ctx.vector_store_check(ctx.project_id, store_id)
    limit = spec.get("max_num_results", 10)
    if not isinstance(limit, int) or not 1 <= limit <= 50:
        raise InvalidRequest(
            "max_num_results must be between 1 and 50.", param="tools.max_num_results"
        )
    tool = FileSearchTool(
        name="file_search",
        type="file_search",
        description="Search the user's uploaded files for passages relevant to a query.",
        parameters=_PARAMETERS,
        search=ctx.vector_search,
        vector_store_ids=list(ids),
        max_num_results=limit,
        filters=spec.get("filters"),
        ranking_options=spec.get("ranking_options"),
    )
    return ToolBundle(tools=[tool])
