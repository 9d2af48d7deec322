"""The Responses API on the agent run engine.

A response is an engine run with ``surface="response"``. Foreground responses execute in the
request's task (a streamed one is cancelled when its client goes away: F5); ``background``
responses are jobs on the durable queue, executed with the run's lease by the engine's shared
run worker (``rixin.agents.worker``; this service is its ``response`` flavour), so a response
whose process died is resumed by another worker once the lease lapses or, when its job has given
up, failed with ``server_error`` by the sweeper (D2). Live events reach streams through an
in-process hub; a stream that misses its run's end polls the store. A foreground response is
created already leased to the request's task (``RunEngine.start_run``), and the response it
returns is the run as the engine settled it: no read-back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

from sqlalchemy import select

from rixin.agents.engine import RunEngine, RunState
from rixin.agents.events import ResponseEventStream, error_event
from rixin.agents.inputs import InputResolver
from rixin.agents.items import StoredItem, normalize_input
from rixin.agents.limits import response_incomplete
from rixin.agents.runs import (
    SETTLED,
    ItemAdded,
    ItemDone,
    RunEvent,
    RunStatus,
    RunUpdated,
    RunView,
    TextDelta,
    load_runs_items,
    load_view,
    view_of,
)
from rixin.agents.tools.base import BuildContext
from rixin.agents.tools.registry import Toolset
from rixin.agents.worker import run_worker
from rixin.errors import InvalidRequest, NotFound, RixinError
from rixin.jobs import JobContext, JobQueue
from rixin.schemas.responses import ConversationParam, CreateResponse, DeletedResponse
from rixin.services.conversations import (
    ItemPage,
    append_items,
    conversation_history,
    get_conversation,
)
from rixin.services.models import ModelManager
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records_agents import AgentItemRecord, AgentRunRecord, ConversationRecord

log = logging.getLogger("rixin.responses")

JSONDict = dict[str, Any]
JOB_KIND = "response.run"
SURFACE = "response"
MAX_CHAIN = 100
STREAM_QUEUE = 10_000
_STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.IN_PROGRESS: "in_progress",
    RunStatus.CANCELLING: "in_progress",
    RunStatus.REQUIRES_ACTION: "completed",
    RunStatus.COMPLETED: "completed",
    RunStatus.INCOMPLETE: "incomplete",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.EXPIRED: "failed",
}
_OVERFLOW = object()


class RunEventHub:
    """In-process fan-out of run events to live streams (bounded per stream)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[asyncio.Queue[object]]] = {}

    def subscribe(self, run_id: str) -> asyncio.Queue[object]:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=STREAM_QUEUE)
        self._subscribers.setdefault(run_id, []).append(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[object]) -> None:
        queues = self._subscribers.get(run_id, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self._subscribers.pop(run_id, None)

    def publisher(self, run_id: str) -> Any:
        async def publish(event: RunEvent) -> None:
            for queue in list(self._subscribers.get(run_id, [])):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.unsubscribe(run_id, queue)
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.get_nowait()
                        queue.put_nowait(_OVERFLOW)

        return publish


class _ResponseHooks:
    """Context of a response: its conversation, or its chain of previous responses."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items

    async def history(self, session: Any, run: AgentRunRecord) -> list[StoredItem]:
        if run.conversation_id:
            return await conversation_history(session, run.conversation_id, self.max_items)
        chain: list[AgentRunRecord] = []
        previous_id = run.previous_run_id
        while previous_id and len(chain) < MAX_CHAIN:
            previous = await session.get(AgentRunRecord, previous_id)
            if previous is None or previous.project_id != run.project_id:
                break
            chain.append(previous)
            previous_id = previous.previous_run_id
        found = await load_runs_items(session, [previous.id for previous in chain])
        items: list[StoredItem] = []
        for previous in reversed(chain):
            inputs, outputs = found[previous.id]
            items += inputs + outputs
        return items[-self.max_items :]

    async def on_settled(
        self,
        session: Any,
        run: AgentRunRecord,
        inputs: list[StoredItem],
        outputs: list[StoredItem],
    ) -> None:
        if not run.conversation_id:
            return
        conversation = await session.get(ConversationRecord, run.conversation_id)
        if conversation is not None:
            await append_items(session, conversation, [*inputs, *outputs], run_id=run.id)


class ResponsesService:
    def __init__(
        self,
        db: Database,
        engine: RunEngine,
        models: ModelManager,
        jobs: JobQueue,
        settings: Settings,
        inputs: InputResolver | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.models = models
        self.jobs = jobs
        self.settings = settings
        self.inputs = inputs
        """Resolves file and image input parts; without it they are refused."""
        self.hub = RunEventHub()
        engine.register_surface(SURFACE, _ResponseHooks(settings.agents.max_history_items))
        self.worker = run_worker(engine, jobs)
        self.worker.add(self)
        self._foreground: set[asyncio.Task[RunView | None]] = set()
        self.closers: list[Callable[[], Awaitable[None]]] = []
        """Called by ``aclose`` (resources the tools hold, such as an own sandbox)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.worker.start()

    async def aclose(self) -> None:
        for task in list(self._foreground):
            task.cancel()
        await self.worker.stop()
        for close in self.closers:
            with contextlib.suppress(Exception):
                await close()

    # -- the ``response`` flavour of the run worker ----------------------------------------------

    job_kind = JOB_KIND

    async def run_job(self, ctx: JobContext) -> dict[str, Any] | None:
        run_id = str(ctx.job.payload["run_id"])
        await self.engine.execute(run_id, sink=self.hub.publisher(run_id), detach=True)
        return {"run_id": run_id}

    async def after_sweep(self) -> None:
        return None

    # -- create --------------------------------------------------------------------------------

    async def create(
        self, project_id: str, body: CreateResponse
    ) -> JSONDict | AsyncIterator[bytes]:
        served = self.models.get(body.model, "chat")
        if body.previous_response_id and body.conversation:
            raise InvalidRequest(
                "previous_response_id cannot be used together with conversation.",
                param="previous_response_id",
            )
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        inputs = normalize_input(
            body.input if body.input is not None else [], media=self.inputs is not None
        )
        run_id = new_id("resp")
        params = _params(body)
        toolset = await self.engine.registry.build(
            params["tools"], self.engine.build_context(project_id, run_id)
        )
        params["tool_choice"] = _chat_tool_choice(body.tool_choice, set(toolset.tools))
        background = bool(body.background)
        store = body.store is not False
        if background and not store:
            raise InvalidRequest("background responses must be stored.", param="store")
        if self.inputs is not None:
            inputs = await self.inputs.resolve(
                project_id, inputs, model=body.model, vision=served.capabilities.vision
            )
        queue = self.hub.subscribe(run_id) if body.stream else None
        try:
            view, state = await self._persist(
                project_id,
                run_id,
                body,
                params,
                inputs,
                background=background,
                store=store,
                toolset=toolset,
            )
        except BaseException:
            if queue is not None:
                self.hub.unsubscribe(run_id, queue)
            raise
        if state is None:
            if queue is None:
                return render(view)
            return self._stream(view, queue, task=None)
        task = asyncio.create_task(
            self.engine.execute(run_id, sink=self.hub.publisher(run_id), state=state),
            name=f"rixin-response-{run_id}",
        )
        self._foreground.add(task)
        task.add_done_callback(self._foreground.discard)
        if queue is not None:
            return self._stream(view, queue, task=task)
        final = await asyncio.shield(task)
        if final is None:  # settled by someone else (a cancel, a sweep): read it
            final = await self._view(project_id, run_id, any_store=True)
        _raise_client_error(final)
        return render(final)

    async def _persist(
        self,
        project_id: str,
        run_id: str,
        body: CreateResponse,
        params: JSONDict,
        inputs: list[StoredItem],
        *,
        background: bool,
        store: bool,
        toolset: Toolset,
    ) -> tuple[RunView, RunState | None]:
        """Insert the run: a background one with its job, a foreground one leased to this
        process (the ``RunState`` to execute it with)."""
        async with self.db.session() as session:
            # Held, so the history read below finds it in the session (the identity map keeps
            # only referenced records), not in the database.
            held: list[AgentRunRecord] = []
            if body.previous_response_id:
                held.append(await _get_run(session, project_id, body.previous_response_id))
            conversation_id = None
            if body.conversation is not None:
                wanted = (
                    body.conversation.id
                    if isinstance(body.conversation, ConversationParam)
                    else body.conversation
                )
                conversation_id = (await get_conversation(session, project_id, wanted)).id
            fields: JSONDict = {
                "project_id": project_id,
                "surface": SURFACE,
                "model": body.model,
                "params": params,
                "inputs": inputs,
                "background": background,
                "store": store,
                "previous_run_id": body.previous_response_id,
                "conversation_id": conversation_id,
                "run_id": run_id,
            }
            if not background:
                state = await self.engine.start_run(session, toolset=toolset, **fields)
                return view_of(state.run, []), state
            run = await self.engine.create_run(session, **fields)
            job = await self.jobs.enqueue(
                project_id,
                JOB_KIND,
                {"run_id": run_id},
                idempotency_key=run_id,
                max_attempts=self.settings.agents.job_attempts,
                session=session,
            )
            run.job_id = job.id
            return view_of(run, []), None

    # -- streaming -----------------------------------------------------------------------------

    async def _stream(
        self,
        view: RunView,
        queue: asyncio.Queue[object],
        *,
        task: asyncio.Task[RunView | None] | None,
    ) -> AsyncIterator[bytes]:
        builder = ResponseEventStream(render)
        try:
            for first in builder.feed(RunUpdated(view)):
                yield _sse(first)
            while not builder.finished:
                try:
                    event: object = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    current = await self._view(view.project_id, view.id, any_store=True)
                    if current.status in SETTLED and (task is None or task.done()):
                        for out in builder.feed(RunUpdated(current)):
                            yield _sse(out)
                        break
                    continue
                if event is _OVERFLOW:
                    message = "The stream fell too far behind and was closed."
                    yield _sse(error_event(builder.sequence, message))
                    break
                if isinstance(event, RunUpdated | ItemAdded | ItemDone | TextDelta):
                    for out in builder.feed(event):
                        yield _sse(out)
        except RixinError as exc:
            yield _sse(error_event(builder.sequence, exc.message, exc.code))
        finally:
            self.hub.unsubscribe(view.id, queue)
            if task is not None and not task.done():
                task.cancel()  # the client went away: stop generating (F5)

    # -- read, delete, cancel ------------------------------------------------------------------

    async def retrieve(self, project_id: str, response_id: str) -> JSONDict:
        return render(await self._view(project_id, response_id))

    async def _view(self, project_id: str, response_id: str, *, any_store: bool = False) -> RunView:
        async with self.db.session(readonly=True) as session:
            run = await _get_run(session, project_id, response_id, any_store=any_store)
            return await load_view(session, run)

    async def delete(self, project_id: str, response_id: str) -> DeletedResponse:
        async with self.db.session() as session:
            run = await _get_run(session, project_id, response_id)
            await session.delete(run)
        return DeletedResponse(id=response_id)

    async def cancel(self, project_id: str, response_id: str) -> JSONDict:
        async with self.db.session() as session:
            run = await _get_run(session, project_id, response_id)
            if not run.background:
                raise InvalidRequest(
                    "Only background responses can be cancelled.", param="response_id"
                )
            await self.engine.request_cancel(session, run)
        for _ in range(50):
            view = await self._view(project_id, response_id)
            if view.status in SETTLED:
                return render(view)
            await asyncio.sleep(0.1)
        return render(view)

    async def input_items(
        self,
        project_id: str,
        response_id: str,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            run = await _get_run(session, project_id, response_id)
            query = select(AgentItemRecord).where(
                AgentItemRecord.run_id == run.id, AgentItemRecord.phase == "input"
            )
            if after is not None:
                anchor = await session.get(AgentItemRecord, after) if len(after) <= 64 else None
                if anchor is None or anchor.run_id != run.id:
                    raise NotFound(f"Item with id '{after[:64]}' not found.", param="after")
                column = AgentItemRecord.position
                query = query.where(
                    column > anchor.position if order == "asc" else column < anchor.position
                )
            column = AgentItemRecord.position
            query = query.order_by(column.asc() if order == "asc" else column.desc())
            rows = list(await session.scalars(query.limit(limit + 1)))
        page = ItemPage([dict(r.data) for r in rows[:limit]], has_more=len(rows) > limit)
        return page.body()


# -- helpers ---------------------------------------------------------------------------------


async def _get_run(
    session: Any, project_id: str, response_id: str, *, any_store: bool = False
) -> AgentRunRecord:
    run = await session.get(AgentRunRecord, response_id) if len(response_id) <= 64 else None
    if (
        run is None
        or run.project_id != project_id
        or run.surface != SURFACE
        or not (run.store or any_store)
    ):
        raise NotFound(f"Response with id '{response_id[:64]}' not found.", param="response_id")
    result: AgentRunRecord = run
    return result


def _params(body: CreateResponse) -> JSONDict:
    fmt = body.text.format if body.text is not None else None
    response_format: JSONDict | None = None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None or fmt.name is None:
            raise InvalidRequest(
                "text.format of type json_schema needs 'name' and 'schema'.", param="text.format"
            )
        json_schema: JSONDict = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            json_schema["strict"] = fmt.strict
        response_format = {"type": "json_schema", "json_schema": json_schema}
    elif fmt is not None and fmt.type == "json_object":
        response_format = {"type": "json_object"}
    return {
        "instructions": body.instructions,
        "tools": list(body.tools or []),
        "tool_choice_raw": body.tool_choice,
        "parallel_tool_calls": body.parallel_tool_calls,
        "max_tool_calls": body.max_tool_calls,
        "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "truncation": body.truncation or "disabled",
        "include": list(body.include or []),
        "metadata": body.metadata or {},
        "text": body.text.known(by_alias=True) if body.text is not None else None,
        "response_format": response_format,
        "user": body.user,
        "top_logprobs": body.top_logprobs,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
    }


def _chat_tool_choice(choice: str | JSONDict | None, names: set[str]) -> Any:
    """The chat ``tool_choice`` for a Responses ``tool_choice``."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto or required.", param="tool_choice")
        return choice
    kind = choice.get("type")
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        return mode if mode in ("auto", "required") else "auto"
    name = {
        "function": choice.get("name"),
        "mcp": choice.get("name"),
        "file_search": "file_search",
        "code_interpreter": "code_interpreter",
    }.get(str(kind))
    if not isinstance(name, str) or name not in names:
        raise InvalidRequest(
            "tool_choice names a tool that is not among the tools.", param="tool_choice"
        )
    return {"type": "function", "function": {"name": name}}


def _raise_client_error(view: RunView) -> None:
    """A foreground response that failed on the request itself is a 4xx, not a failed body."""
    error = view.error or {}
    status = error.get("status")
    if view.status == RunStatus.FAILED and isinstance(status, int) and 400 <= status < 500:
        if status in (408, 429) or view.output:
            return
        raise InvalidRequest(str(error.get("message")), param=error.get("param"))


def _sse(event: JSONDict) -> bytes:
    data = json.dumps(event, ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def render(view: RunView) -> JSONDict:
    """The ``Response`` object of a run."""
    params = view.params
    error = view.error
    include = set(params.get("include") or [])
    text = params.get("text") or {}
    body: JSONDict = {
        "id": view.id,
        "object": "response",
        "created_at": view.created_at,
        "status": _STATUS.get(RunStatus(view.status), "failed"),
        "background": view.background,
        "completed_at": view.completed_at
        if view.status in ("completed", "requires_action")
        else None,
        "error": {"code": error["code"], "message": error["message"]} if error else None,
        "incomplete_details": response_incomplete(view.incomplete_details),
        "instructions": params.get("instructions"),
        "max_output_tokens": params.get("max_output_tokens"),
        "max_tool_calls": params.get("max_tool_calls"),
        "model": view.model,
        "output": [_output_item(item, include) for item in view.output],
        "parallel_tool_calls": params.get("parallel_tool_calls") is not False,
        "previous_response_id": view.previous_run_id,
        "conversation": {"id": view.conversation_id} if view.conversation_id else None,
        "reasoning": None,
        "service_tier": "default",
        "store": view.store,
        "temperature": params.get("temperature") if params.get("temperature") is not None else 1.0,
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": params.get("tool_choice_raw") or "auto",
        "tools": [_tool_view(t) for t in params.get("tools") or []],
        "top_logprobs": params.get("top_logprobs"),
        "top_p": params.get("top_p") if params.get("top_p") is not None else 1.0,
        "truncation": params.get("truncation") or "disabled",
        "metadata": params.get("metadata") or {},
    }
    if view.usage is not None:
        body["usage"] = view.usage
    if params.get("user") is not None:
        body["user"] = params["user"]
    return body


def _output_item(item: StoredItem, include: set[str]) -> JSONDict:
    data = dict(item.data)
    if data.get("type") == "file_search_call" and "file_search_call.results" not in include:
        data["results"] = None
    if (
        data.get("type") == "code_interpreter_call"
        and "code_interpreter_call.outputs" not in include
    ):
        data["outputs"] = None
    return data


def _tool_view(tool: JSONDict) -> JSONDict:
    out = dict(tool)
    if out.get("type") == "function":
        out.setdefault("parameters", {"type": "object", "properties": {}})
        out.setdefault("strict", True)
        out.setdefault("description", None)
    if out.get("type") == "mcp":
        out.pop("authorization", None)
        if isinstance(out.get("headers"), dict):
            out["headers"] = {k: "<redacted>" for k in out["headers"]}
    if out.get("type") == "code_interpreter":
        out.setdefault("container", {"type": "auto"})
    return out


def build_context_factory(
    settings: Settings,
    *,
    vector_search: Any = None,
    vector_store_check: Any = None,
    sandbox: Any = None,
) -> Any:
    """``(project_id, run_id) -> BuildContext`` with the platform services tools may use."""

    def build(project_id: str, run_id: str) -> BuildContext:
        return BuildContext(
            project_id=project_id,
            run_id=run_id,
            settings=settings.agents,
            vector_search=vector_search,
            vector_store_check=vector_store_check,
            sandbox=sandbox,
        )

    return build


def build_agent_services(
    settings: Settings,
    db: Database,
    chat: Any,
    models: ModelManager,
    jobs: JobQueue,
    *,
    vector_stores: Any = None,
    sandbox: Any = None,
    files: Any = None,
) -> tuple[ResponsesService, Any]:
    """The run engine with rixin's tools, and the Responses and Conversations services on it.

    ``files`` (a ``FileService``) reads ``input_file``/``input_image`` parts given by id; by
    default one over the data directory's blob store.
    """
    from rixin.agents.steps import ChatModelStep
    from rixin.agents.tools.registry import default_registry
    from rixin.services.conversations import ConversationService
    from rixin.services.files import FileService
    from rixin.store.blobs import BlobStore

    if files is None:
        files = FileService(db, BlobStore(settings.data_dir / "files", db))

    search = check = None
    if vector_stores is not None:
        search, check = _vector_store_tools(vector_stores)
    runner = SandboxRunner(
        sandbox, settings.data_dir / "sandbox", files=files, api_base=SandboxRunner.base(settings)
    )
    registry = default_registry()
    registry.load_plugins(settings.agents.tool_modules)
    engine = RunEngine(
        db,
        ChatModelStep(chat, max_output_chars=settings.agents.max_output_chars),
        registry,
        settings.agents,
        build_context_factory(
            settings, vector_search=search, vector_store_check=check, sandbox=runner
        ),
    )
    responses = ResponsesService(db, engine, models, jobs, settings, InputResolver(files))
    responses.closers.append(runner.aclose)
    return responses, ConversationService(db)


def _vector_store_tools(service: Any) -> tuple[Any, Any]:
    from rixin.schemas.vector_stores import VectorStoreSearchRequest

    async def search(
        project_id: str,
        vector_store_id: str,
        query: str,
        max_num_results: int,
        filters: JSONDict | None,
        ranking_options: JSONDict | None,
    ) -> list[JSONDict]:
        request = VectorStoreSearchRequest.model_validate(
            {
                "query": query,
                "max_num_results": max_num_results,
                "filters": filters,
                "ranking_options": ranking_options,
            }
        )
        page = await service.search(project_id, vector_store_id, request)
        return [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.score,
                "text": "".join(part.text for part in hit.content),
                "attributes": hit.attributes,
            }
            for hit in page.data
        ]

    async def check(project_id: str, vector_store_id: str) -> None:
        await service.retrieve(project_id, vector_store_id)

    return search, check


class SandboxRunner:
    """``code_interpreter`` on ``rixin.sandbox.SandboxService``: one session per container.

    Uses the platform's sandbox service when given one, else starts its own on first use.
    Sessions live in memory: after a restart a container gets a fresh session. With ``files``
    (a ``FileService``), a container's ``file_ids`` are copied into its session before its first
    run, and every file a run produces is stored as a project file (``assistants_output``).
    """

    IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

    def __init__(self, service: Any, root: Any, *, files: Any = None, api_base: str = "") -> None:
        self._service = service
        self._owned = service is None
        self._root = root
        self._files = files
        self._api_base = api_base.rstrip("/")
        self._sessions: dict[tuple[str, str], str] = {}
        self._loaded: set[str] = set()
        self._lock = asyncio.Lock()

    @staticmethod
    def base(settings: Settings) -> str:
        """The API's own address, for the URLs of produced images (no proxy is known here)."""
        host = settings.host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is not an address
            host = "localhost"
        return (
            f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"
        )

    async def _session(self, project_id: str, container_id: str, *, fresh: bool) -> str:
        async with self._lock:
            if self._service is None:
                from rixin.sandbox.service import SandboxService

                self._service = SandboxService(self._root)
            key = (project_id, container_id)
            if fresh or key not in self._sessions:
                self._loaded.discard(self._sessions.get(key, ""))
                session = await self._service.create_session(project_id)
                self._sessions[key] = session.id
            return self._sessions[key]

    async def check_files(self, project_id: str, file_ids: Sequence[str]) -> list[Any]:
        """The project's files of ``file_ids`` (404 naming the container's ``file_ids``)."""
        if self._files is None:
            raise InvalidRequest(
                "code_interpreter file_ids are not available on this server.",
                param="tools.container.file_ids",
            )
        param = "tools.container.file_ids"
        records = []
        for fid in file_ids:
            try:
                records.append(await self._files.retrieve(project_id, fid))
            except NotFound as exc:
                raise NotFound(exc.message, param=param) from exc
        return records

    async def _files_in(self, project_id: str, file_ids: Sequence[str]) -> dict[str, bytes]:
        records = await self.check_files(project_id, file_ids)
        limit = getattr(getattr(self._service, "policy", None), "disk_bytes", None)
        if limit is not None and sum(r.bytes for r in records) > limit:
            raise InvalidRequest(
                "The container's files exceed the sandbox's disk quota.",
                param="tools.container.file_ids",
            )
        return {r.filename: await self._files.read_bytes(project_id, r.id) for r in records}

    async def _run(
        self, project_id: str, session_id: str, code: str, file_ids: Sequence[str]
    ) -> Any:
        files_in = None
        if file_ids and session_id not in self._loaded:
            files_in = await self._files_in(project_id, file_ids)
        result = await self._service.run(session_id, code, files_in=files_in, project_id=project_id)
        self._loaded.add(session_id)
        return result

    async def _store_output(self, project_id: str, artifact: Any) -> Any:
        data = await asyncio.to_thread(artifact.path.read_bytes)
        await asyncio.to_thread(artifact.path.unlink, missing_ok=True)  # the sandbox's copy
        return await self._files.put_output(project_id, data, filename=artifact.name)

    async def _files_out(self, project_id: str, artifacts: Sequence[Any]) -> list[JSONDict]:
        """Store what a run produced as project files (names and sizes are the sandbox's)."""
        if self._files is None:
            return []
        out = []
        for artifact in artifacts:
            record = await self._store_output(project_id, artifact)
            out.append(
                {
                    "file_id": record.id,
                    "filename": record.filename,
                    "mime_type": artifact.mime,
                    "bytes": record.bytes,
                    "url": f"{self._api_base}/v1/files/{record.id}/content",
                    "image": artifact.mime in self.IMAGE_TYPES,
                }
            )
        return out

    async def __call__(
        self, project_id: str, container_id: str, code: str, *, file_ids: Sequence[str] = ()
    ) -> JSONDict:
        session_id = await self._session(project_id, container_id, fresh=False)
        try:
            result = await self._run(project_id, session_id, code, file_ids)
        except NotFound as exc:
            if exc.param != "session_id":
                raise
            session_id = await self._session(project_id, container_id, fresh=True)
            result = await self._run(project_id, session_id, code, file_ids)
        return {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
            "files": await self._files_out(project_id, result.files_out),
        }

    async def aclose(self) -> None:
        if self._owned and self._service is not None:
            await self._service.aclose()
