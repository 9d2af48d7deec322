"""Agent engine and tool calls: `/v1/responses` next to `/v1/chat/completions`, side by side.

Three measurements (``--parts overhead,stream,tools``):

``overhead``
    Engine overhead per step beyond model time. A mock upstream (this script with
    ``--serve-mock``, its own process: raw asyncio HTTP/1.1, a fixed ``--latency-ms`` before the
    first byte of every answer, a function call when the request offers tools and the last
    message is not a tool result, else a short text; plain JSON or SSE) serves one
    ``openai_compat`` chat model ``fake-chat`` of a ``rixin serve`` on defaults (``store`` true).
    The same conversation goes non-streaming through ``/v1/responses`` and through
    ``/v1/chat/completions``: ``--requests`` sequential requests per side, sides alternating
    (order flipped every repetition), ``--reps`` repetitions; overhead = median(responses) -
    median(chat), median over repetitions. Also a client-side function tool round trip (2 steps:
    the call, then its output sent back with ``previous_response_id``; the chat side resends the
    whole history) for the per-step figure, and rixin's CPU time per request
    (``/proc/<pid>/stat``; robust to the machine's load).

``stream``
    Time to first stream event: streamed ``/v1/responses`` (first SSE event; first
    ``response.output_text.delta``) vs streamed ``/v1/chat/completions`` (first chunk; first
    content chunk) on the same mock, minus nothing: the mock's latency is the model's time to
    first token and is printed next to the figures.

``tools``
    Tool-call validity and tool-selection accuracy with the packaged
    ``qwen2.5-coder-0.5b-instruct`` (a real ``rixin serve`` with only that chat model) over
    ``--tasks`` tasks generated with a fixed seed from 10 tool templates x Chinese and English
    phrasings, each offering 3-4 tools of which one is right. Per task: rixin with
    ``tool_choice="required"`` (constrained decoding), rixin with ``"auto"`` (tool calls extracted
    from text), and the peer: the same GGUF through xllamacpp in process (llama.cpp's own
    OpenAI-compatible handler, same tools and ``tool_choice``, no rixin parsing/constraints),
    counting only native ``tool_calls``. A call is *parsed* when its arguments are JSON, *valid*
    when they also match the offered tool's JSON schema (``jsonschema``), *selected right* when
    the name is the expected tool. ``max_tokens`` 96, temperature 0, 2 threads on every side.
    Per-task results go to ``.bench/agents-tools.jsonl``.

    make bench-agents     # or: .venv/bin/python bench/agents.py
    .venv/bin/python bench/agents.py --parts tools --tasks 6    # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from harness import RixinProcess, free_port, test_models_dir  # noqa: E402

JSONDict = dict[str, Any]
CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
MODEL_PACKAGE = "qwen2.5-coder-0.5b-instruct-q4"
THREADS = 2
MAX_TOKENS = 96
SEED = 20261129
GOAL_STEP_MS = 20.0
GOAL_FIRST_EVENT_MS = 50.0

# --------------------------------------------------------------------------- mock upstream

MOCK_TEXT = ["It ", "is ", "sunny ", "and ", "21 ", "degrees ", "in ", "Paris."]
MOCK_ARGS = '{"city":"Paris"}'


def _mock_message(body: JSONDict) -> tuple[str | None, JSONDict | None]:
    """The mock's answer: (text, None) or (None, tool call)."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if tools and (not messages or messages[-1].get("role") != "tool"):
        name = tools[0].get("function", {}).get("name", "get_weather")
        call = {"id": "call_mock0", "type": "function", "function": {"name": name}}
        call["function"]["arguments"] = MOCK_ARGS
        return None, call
    return "".join(MOCK_TEXT), None


def _mock_answer(body: JSONDict) -> bytes:
    text, call = _mock_message(body)
    model = body.get("model", "fake-model")
    base = {"id": "chatcmpl-mock", "created": 1700000000, "model": model}
    usage = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
    if not body.get("stream"):
        message: JSONDict = {"role": "assistant", "content": text}
        if call is not None:
            message["tool_calls"] = [call]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if call else "stop",
        }
        payload = json.dumps(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )
        data = payload.encode()
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nconnection: keep-alive\r\n\r\n"
        )
        return head.encode() + data

    def chunk(delta: JSONDict, finish: str | None = None) -> JSONDict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}

    events: list[object] = [chunk({"role": "assistant", "content": ""})]
    if call is not None:
        events.append(chunk({"tool_calls": [{"index": 0, **call}]}))
        events.append(chunk({}, "tool_calls"))
    else:
        events += [chunk({"content": word}) for word in MOCK_TEXT]
        events.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    events.append("[DONE]")
    out = bytearray(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
    )
    for event in events:
        payload = event if isinstance(event, str) else json.dumps(event)
        data = f"data: {payload}\n\n".encode()
        out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


class _MockConn(asyncio.Protocol):
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self._answer())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            method, _, rest = head.partition(" ")
            self.queue.put_nowait((method, rest.split(" ", 1)[0], body))

    async def _answer(self) -> None:
        while True:  # in order: one answer at a time per connection (HTTP/1.1)
            method, path, body = await self.queue.get()
            if method == "POST":
                await asyncio.sleep(self.latency_s)
                answer = _mock_answer(json.loads(body or b"{}"))
            else:
                data = (
                    b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}'
                    if path.endswith("/models")
                    else b'{"status":"ok"}'
                )
                answer = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
            assert self.transport is not None
            if self.transport.is_closing():
                return
            self.transport.write(answer)


async def _serve_mock(port: int, latency_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _MockConn(latency_s), "127.0.0.1", port, reuse_address=True
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def start_mock(latency_ms: float) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--serve-mock", "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"mock upstream did not start: {line!r}")
    return proc, int(line.split()[1])


# --------------------------------------------------------------------------- shared helpers


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


# --------------------------------------------------------------------------- part 1: overhead

USER = "What is the weather in Paris? Answer in one short sentence."
WEATHER_FN = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TOOL_OUTPUT = '{"temperature_c": 21, "sky": "sunny"}'


class Conversations:
    """The same conversation on both APIs; each method returns seconds per request."""

    def __init__(self, client: httpx.Client, max_tokens: int = 32) -> None:
        self.c = client
        self.max_tokens = max_tokens

    def _post(self, path: str, body: JSONDict) -> tuple[float, JSONDict]:
        start = time.perf_counter()
        r = self.c.post(path, json=body)
        elapsed = time.perf_counter() - start
        if r.status_code != 200:
            raise RuntimeError(f"{path} -> {r.status_code}: {r.text[:400]}")
        return elapsed, r.json()

    def responses_text(self) -> list[float]:
        body = {"model": "fake-chat", "input": USER, "max_output_tokens": self.max_tokens}
        t, out = self._post("/responses", body)
        assert out["status"] == "completed" and out["output"][-1]["type"] == "message", out
        return [t]

    def chat_text(self) -> list[float]:
        messages = [{"role": "user", "content": USER}]
        body = {"model": "fake-chat", "messages": messages, "max_tokens": self.max_tokens}
        t, out = self._post("/chat/completions", body)
        assert out["choices"][0]["message"]["content"], out
        return [t]

    def responses_tool(self) -> list[float]:
        tools = [{"type": "function", **WEATHER_FN}]
        body = {
            "model": "fake-chat",
            "input": USER,
            "tools": tools,
            "max_output_tokens": self.max_tokens,
        }
        t1, first = self._post("/responses", body)
        calls = [item for item in first["output"] if item["type"] == "function_call"]
        assert calls, first
        follow = {
            "model": "fake-chat",
            "previous_response_id": first["id"],
            "input": [
                {
                    "type": "function_call_output",
                    "call_id": calls[0]["call_id"],
                    "output": TOOL_OUTPUT,
                }
            ],
            "tools": tools,
            "max_output_tokens": self.max_tokens,
        }
        t2, second = self._post("/responses", follow)
        assert second["output"][-1]["type"] == "message", second
        return [t1, t2]

    def chat_tool(self) -> list[float]:
        tools = [{"type": "function", "function": WEATHER_FN}]
        messages: list[JSONDict] = [{"role": "user", "content": USER}]
        body = {"model": "fake-chat", "messages": messages, "tools": tools}
        body["max_tokens"] = self.max_tokens
        t1, first = self._post("/chat/completions", body)
        message = first["choices"][0]["message"]
        call = message["tool_calls"][0]
        messages = [
            *messages,
            {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
            {"role": "tool", "tool_call_id": call["id"], "content": TOOL_OUTPUT},
        ]
        t2, second = self._post("/chat/completions", {**body, "messages": messages})
        assert second["choices"][0]["message"]["content"], second
        return [t1, t2]


@dataclass
class Block:
    """One side's ``requests`` sequential conversations in one repetition."""

    per_step_ms: list[list[float]]
    """Milliseconds of each conversation's steps."""
    cpu_ms: float
    """rixin's CPU milliseconds per conversation."""
    load: float


def run_block(fn: Callable[[], list[float]], n: int, pid: int) -> Block:
    cpu = cpu_seconds(pid)
    rows = [[x * 1000 for x in fn()] for _ in range(n)]
    cpu = cpu_seconds(pid) - cpu
    return Block(rows, cpu * 1000 / n, load())


def overhead(rixin: RixinProcess, args: argparse.Namespace, latency_ms: float) -> None:
    pid = rixin.proc.pid if rixin.proc else 0
    with httpx.Client(base_url=rixin.api_url, headers=rixin.headers(), timeout=60) as client:
        conv = Conversations(client)
        pairs = {
            "1 step (text)": (conv.responses_text, conv.chat_text),
            "2 steps (function call + output)": (conv.responses_tool, conv.chat_tool),
        }
        for label, (resp_fn, chat_fn) in pairs.items():
            for fn in (resp_fn, chat_fn, resp_fn, chat_fn):  # warm-up
                for _ in range(5):
                    fn()
            blocks: dict[str, list[Block]] = {"responses": [], "chat": []}
            for rep in range(args.reps):
                order = [("responses", resp_fn), ("chat", chat_fn)]
                for side, fn in order[:: -1 if rep % 2 else 1]:
                    blocks[side].append(run_block(fn, args.requests, pid))
            report_overhead(label, blocks, latency_ms)


def report_overhead(label: str, blocks: dict[str, list[Block]], latency_ms: float) -> None:
    steps = len(blocks["responses"][0].per_step_ms[0])
    ld = med([b.load for side in blocks.values() for b in side])
    print(f"\n[{label}] mock model time {latency_ms:.0f} ms per step, {steps} step(s)")

    def totals(b: Block) -> list[float]:
        return [sum(row) for row in b.per_step_ms]

    def step(b: Block, i: int) -> list[float]:
        return [row[i] for row in b.per_step_ms]

    resp, chat = blocks["responses"], blocks["chat"]
    for i in range(steps):
        r = med([med(step(b, i)) for b in resp])
        c = med([med(step(b, i)) for b in chat])
        rp = med([pct(step(b, i), 0.95) for b in resp])
        cp = med([pct(step(b, i), 0.95) for b in chat])
        print(
            f"  step {i + 1}: responses p50 {r:.2f} / p95 {rp:.2f} ms, "
            f"chat p50 {c:.2f} / p95 {cp:.2f} ms, overhead p50 {r - c:+.2f} ms"
        )
    r_tot = med([med(totals(b)) for b in resp])
    c_tot = med([med(totals(b)) for b in chat])
    # Per repetition: the mean over steps of median(responses step) - median(chat step).
    over = [
        statistics.fmean(med(step(a, i)) - med(step(b, i)) for i in range(steps))
        for a, b in zip(resp, chat, strict=True)
    ]
    per_step = med(over)
    r_cpu, c_cpu = med([b.cpu_ms for b in resp]), med([b.cpu_ms for b in chat])
    reps = ", ".join(f"{x:.2f}" for x in over)
    print(
        f"responses {label} latency p50 = {r_tot:.2f} ms (peer chat completions {c_tot:.2f} ms, "
        f"ratio {r_tot / c_tot:.3f}, anchor mock model time {latency_ms * steps:.0f} ms), "
        f"load {ld:.2f}"
    )
    print(
        f"engine overhead per step, {label} = {per_step:.2f} ms (peer chat completions 0 by "
        f"definition; per repetition {reps}; anchor goal <= {GOAL_STEP_MS:.0f} ms), load {ld:.2f}"
    )
    print(
        f"rixin CPU per step, {label} = {r_cpu / steps:.2f} ms via responses "
        f"(peer chat completions {c_cpu / steps:.2f} ms, ratio {r_cpu / c_cpu:.2f}), load {ld:.2f}"
    )


# --------------------------------------------------------------------------- part 2: streams


@dataclass
class StreamTimes:
    first_event: float
    first_text: float
    total: float


def sse_times(
    client: httpx.Client, path: str, body: JSONDict, is_text: Callable[[Any], bool]
) -> StreamTimes:
    start = time.perf_counter()
    first_event = first_text = 0.0
    buf = ""
    with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path} -> {r.status_code}: {r.read()[:400]!r}")
        for raw in r.iter_raw():
            now = time.perf_counter() - start
            buf += raw.decode()
            while "\n\n" in buf:
                event, buf = buf.split("\n\n", 1)
                data = [ln[5:].strip() for ln in event.split("\n") if ln.startswith("data:")]
                if not data:
                    continue
                if not first_event:
                    first_event = now
                if not first_text and data[0] != "[DONE]" and is_text(json.loads(data[0])):
                    first_text = now
    return StreamTimes(first_event * 1000, first_text * 1000, (time.perf_counter() - start) * 1000)


def _responses_text(event: Any) -> bool:
    return bool(event.get("type") == "response.output_text.delta" and event.get("delta"))


def _chat_text(chunk: Any) -> bool:
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def streams(rixin: RixinProcess, args: argparse.Namespace, latency_ms: float) -> None:
    resp_body = {"model": "fake-chat", "input": USER, "max_output_tokens": 32, "stream": True}
    chat_body = {
        "model": "fake-chat",
        "messages": [{"role": "user", "content": USER}],
        "max_tokens": 32,
        "stream": True,
    }
    sides = {
        "responses": lambda c: sse_times(c, "/responses", resp_body, _responses_text),
        "chat": lambda c: sse_times(c, "/chat/completions", chat_body, _chat_text),
    }
    got: dict[str, list[list[StreamTimes]]] = {"responses": [], "chat": []}
    loads: list[float] = []
    with httpx.Client(base_url=rixin.api_url, headers=rixin.headers(), timeout=60) as client:
        for _ in range(5):
            sides["responses"](client), sides["chat"](client)
        for rep in range(args.reps):
            for side in list(sides)[:: -1 if rep % 2 else 1]:
                got[side].append([sides[side](client) for _ in range(args.requests)])
                loads.append(load())
    ld = med(loads)

    def fig(side: str, attr: str, q: float = 0.5) -> float:
        return med([pct([getattr(t, attr) for t in rows], q) for rows in got[side]])

    print(f"\n[streaming] mock model time to first token {latency_ms:.0f} ms")
    for attr in ("first_event", "first_text", "total"):
        print(
            f"  {attr}: responses p50 {fig('responses', attr):.2f} / p95 "
            f"{fig('responses', attr, 0.95):.2f} ms, chat p50 {fig('chat', attr):.2f} / p95 "
            f"{fig('chat', attr, 0.95):.2f} ms"
        )
    for attr, what, peer in (
        ("first_event", "first stream event", "first chunk"),
        ("first_text", "first output_text.delta", "first content chunk"),
    ):
        r, c = fig("responses", attr), fig("chat", attr)
        print(
            f"responses time to {what} p50 = {r:.2f} ms (peer chat completions {peer} "
            f"{c:.2f} ms, ratio {r / c:.3f}, anchor model TTFT {latency_ms:.0f} ms; goal <= "
            f"{GOAL_FIRST_EVENT_MS:.0f} ms + model TTFT, i.e. {r - latency_ms:+.2f} ms beyond it), "
            f"load {ld:.2f}"
        )


def engine_parts(args: argparse.Namespace, parts: set[str]) -> None:
    mock, port = start_mock(args.latency_ms)
    model = {
        "id": "fake-chat",
        "kind": "chat",
        "replicas": [
            {
                "backend": "openai_compat",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "upstream_model": "fake-model",
                "timeout_s": 30.0,
            }
        ],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rixin = RixinProcess(Path(tmp), models=[model]).start()
            try:
                if "overhead" in parts:
                    overhead(rixin, args, args.latency_ms)
                if "stream" in parts:
                    streams(rixin, args, args.latency_ms)
            finally:
                rixin.stop()
    finally:
        mock.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            mock.wait(5)
        if mock.poll() is None:
            mock.kill()


# --------------------------------------------------------------------------- part 3: tool tasks


def _obj(props: JSONDict, required: list[str] | None = None) -> JSONDict:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else list(props),
        "additionalProperties": False,
    }


S = {"type": "string"}
TOOLS: dict[str, JSONDict] = {
    "get_weather": {
        "description": "Get the current weather for a city.",
        "parameters": _obj({"city": {**S, "description": "City name"}}),
    },
    "convert_currency": {
        "description": "Convert an amount of money from one currency to another.",
        "parameters": _obj(
            {
                "amount": {"type": "number"},
                "from": {**S, "description": "ISO 4217 code of the source currency"},
                "to": {**S, "description": "ISO 4217 code of the target currency"},
            }
        ),
    },
    "book_flight": {
        "description": "Book a flight ticket.",
        "parameters": _obj(
            {
                "origin": {**S, "description": "Departure city"},
                "destination": {**S, "description": "Arrival city"},
                "date": {**S, "description": "Departure date, YYYY-MM-DD"},
            }
        ),
    },
    "get_stock_price": {
        "description": "Get the latest stock price for a ticker symbol.",
        "parameters": _obj({"ticker": {**S, "description": "Ticker symbol, e.g. AAPL"}}),
    },
    "send_email": {
        "description": "Send an email.",
        "parameters": _obj(
            {
                "to": {**S, "description": "Recipient email address"},
                "subject": S,
                "body": S,
            }
        ),
    },
    "set_reminder": {
        "description": "Set a reminder at a time.",
        "parameters": _obj({"time": {**S, "description": "When, e.g. 15:30"}, "text": S}),
    },
    "search_docs": {
        "description": "Search the internal documentation.",
        "parameters": _obj(
            {"query": S, "top_k": {"type": "integer", "minimum": 1, "maximum": 50}}, ["query"]
        ),
    },
    "calculate": {
        "description": "Evaluate an arithmetic expression.",
        "parameters": _obj({"expression": {**S, "description": "e.g. 3*(4+5)"}}),
    },
    "translate": {
        "description": "Translate text into a target language.",
        "parameters": _obj(
            {"text": S, "target_lang": {**S, "description": "Target language code, e.g. en, zh"}}
        ),
    },
    "get_exchange_rate": {
        "description": "Get the exchange rate between two currencies.",
        "parameters": _obj(
            {
                "base": {**S, "description": "ISO 4217 code"},
                "quote": {**S, "description": "ISO 4217 code"},
            }
        ),
    },
}

CITIES = [("北京", "Beijing"), ("上海", "Shanghai"), ("东京", "Tokyo"), ("巴黎", "Paris"),
          ("伦敦", "London"), ("纽约", "New York"), ("深圳", "Shenzhen"),
          ("柏林", "Berlin")]  # fmt: skip
CURRENCIES = [("美元", "USD"), ("人民币", "CNY"), ("欧元", "EUR"), ("日元", "JPY"), ("英镑", "GBP")]
TICKERS = ["AAPL", "MSFT", "TSLA", "NVDA", "BABA", "GOOGL"]
PEOPLE = ["alice@example.com", "bob@example.com", "li.wei@example.cn", "zhang.min@example.cn"]
TOPICS = [("部署指南", "deployment guide"), ("API 密钥", "API keys"), ("备份策略", "backup policy"),
          ("向量索引", "vector index"), ("速率限制", "rate limits")]  # fmt: skip
LANGS = [("英语", "en", "English"), ("中文", "zh", "Chinese"), ("日语", "ja", "Japanese"),
         ("法语", "fr", "French")]  # fmt: skip
PHRASES = [("今天天气很好", "The weather is nice today"),
           ("谢谢你的帮助", "Thank you for your help"),
           ("会议推迟到明天", "The meeting is moved to tomorrow")]  # fmt: skip


@dataclass
class Task:
    lang: str
    tool: str
    prompt: str
    offered: list[str]
    expect: JSONDict = field(default_factory=dict)


def _task(rng: random.Random, tool: str, zh: bool) -> tuple[str, JSONDict]:
    """One prompt for ``tool`` and the argument values it implies."""
    if tool == "get_weather":
        c = rng.choice(CITIES)
        if zh:
            return rng.choice([f"{c[0]}现在天气怎么样？", f"帮我查一下{c[0]}的天气。"]), {}
        return rng.choice([f"What's the weather like in {c[1]} right now?",
                           f"Check the weather in {c[1]} for me."]), {"city": c[1]}  # fmt: skip
    if tool == "convert_currency":
        a, b = rng.sample(CURRENCIES, 2)
        n = rng.choice([50, 120, 300, 1000, 2500])
        expect = {"amount": n, "from": a[1], "to": b[1]}
        if zh:
            return f"把{n}{a[0]}换算成{b[0]}是多少？", expect
        return f"Convert {n} {a[1]} to {b[1]}.", expect
    if tool == "book_flight":
        o, d = rng.sample(CITIES, 2)
        day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if zh:
            return f"帮我订一张{day}从{o[0]}飞往{d[0]}的机票。", {"date": day}
        return f"Book me a flight from {o[1]} to {d[1]} on {day}.", {
            "origin": o[1], "destination": d[1], "date": day}  # fmt: skip
    if tool == "get_stock_price":
        t = rng.choice(TICKERS)
        if zh:
            return f"{t} 的股价现在是多少？", {"ticker": t}
        return f"What is the current stock price of {t}?", {"ticker": t}
    if tool == "send_email":
        to = rng.choice(PEOPLE)
        if zh:
            return f"给 {to} 发一封邮件，主题是“周报”，内容是“本周进展顺利”。", {"to": to}
        text = "Send an email to {} with subject 'Weekly report' and body 'All good this week'."
        return text.format(to), {"to": to}
    if tool == "set_reminder":
        at = f"{rng.randint(7, 21)}:{rng.choice(['00', '15', '30', '45'])}"
        if zh:
            return f"提醒我在{at}给妈妈打电话。", {"time": at}
        return f"Remind me at {at} to call my mother.", {"time": at}
    if tool == "search_docs":
        q = rng.choice(TOPICS)
        k = rng.choice([3, 5, 10])
        if zh:
            return f"在内部文档里搜索“{q[0]}”，返回前{k}条结果。", {"top_k": k}
        return f"Search the internal docs for '{q[1]}' and return the top {k} results.", {
            "query": q[1], "top_k": k}  # fmt: skip
    if tool == "calculate":
        x, y, z = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        if zh:
            return f"帮我算一下 ({x}+{y})*{z} 等于多少。", {}
        return f"Calculate ({x}+{y})*{z}.", {}
    if tool == "translate":
        p = rng.choice(PHRASES)
        lang = rng.choice([lg for lg in LANGS if lg[1] != ("zh" if zh else "en")])
        if zh:
            return f"把“{p[0]}”翻译成{lang[0]}。", {"target_lang": lang[1]}
        return f"Translate '{p[1]}' into {lang[2]}.", {"target_lang": lang[1]}
    if tool == "get_exchange_rate":
        a, b = rng.sample(CURRENCIES, 2)
        if zh:
            return f"{a[0]}兑{b[0]}的汇率是多少？", {"base": a[1], "quote": b[1]}
        return f"What's the exchange rate from {a[1]} to {b[1]}?", {"base": a[1], "quote": b[1]}
    raise ValueError(tool)


def generate_tasks(n: int, seed: int = SEED) -> list[Task]:
    """``n`` tasks: each tool in turn, twice (Chinese, then English)."""
    rng = random.Random(seed)
    names = list(TOOLS)
    tasks = []
    for i in range(n):
        tool = names[(i // 2) % len(names)]
        zh = i % 2 == 0
        prompt, expect = _task(rng, tool, zh)
        others = rng.sample([t for t in names if t != tool], rng.choice([2, 3]))
        offered = [tool, *others]
        rng.shuffle(offered)
        tasks.append(Task("zh" if zh else "en", tool, prompt, offered, expect))
    return tasks


def tool_defs(names: list[str]) -> list[JSONDict]:
    return [{"type": "function", "function": {"name": n, **TOOLS[n]}} for n in names]


@dataclass
class Outcome:
    called: bool = False
    parsed: bool = False
    valid: bool = False
    right_tool: bool = False
    args_match: bool = False
    named_in_text: bool = False
    """The expected tool's name appears in the message text (a call the parsers missed)."""
    seconds: float = 0.0
    raw: Any = None


def judge(task: Task, message: JSONDict, seconds: float) -> Outcome:
    import jsonschema

    out = Outcome(seconds=seconds, raw={k: message.get(k) for k in ("content", "tool_calls")})
    out.named_in_text = task.tool in str(message.get("content") or "")
    calls = message.get("tool_calls") or []
    if not calls:
        return out
    fn = calls[0].get("function") or {}
    out.called = True
    out.right_tool = fn.get("name") == task.tool
    try:
        args = json.loads(fn.get("arguments") or "")
    except (TypeError, ValueError):
        return out
    out.parsed = isinstance(args, dict)
    name = fn.get("name")
    if out.parsed and name in task.offered:
        try:
            jsonschema.validate(args, TOOLS[name]["parameters"])
            out.valid = True
        except jsonschema.ValidationError:
            pass
    if out.right_tool and out.parsed:
        out.args_match = all(
            str(args.get(k, "")).strip().lower() == str(v).lower()
            or (isinstance(v, int) and args.get(k) == v)
            for k, v in task.expect.items()
        )
    return out


def tool_body(task: Task, choice: str) -> JSONDict:
    return {
        "messages": [{"role": "user", "content": task.prompt}],
        "tools": tool_defs(task.offered),
        "tool_choice": choice,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }


def llama_direct(gguf: Path) -> Any:
    """xllamacpp in process, configured as rixin's llamacpp backend (HTTP listener locked)."""
    import xllamacpp as x

    params = x.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = 8192
    params.n_parallel = 1
    params.kv_unified = True
    params.ctx_shift = False
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    params.port = free_port()
    params.api_keys = [secrets.token_urlsafe(32)]
    return x.Server(params)


def tools_part(args: argparse.Namespace) -> None:
    from rixin.engines import packaged

    gguf = packaged.assemble(MODEL_PACKAGE, test_models_dir())
    tasks = generate_tasks(args.tasks)
    configs = ["rixin required", "rixin auto"] + [f"raw {c}" for c in args.peer_choices]
    results: dict[str, list[Outcome]] = {c: [] for c in configs}
    model = [
        {
            "id": CHAT_MODEL,
            "kind": "chat",
            "replicas": [{"backend": "llamacpp", "package": MODEL_PACKAGE}],
        }
    ]
    out_path = REPO / ".bench" / "agents-tools.jsonl"
    out_path.parent.mkdir(exist_ok=True)
    loads: list[float] = []
    direct = llama_direct(gguf)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"RIXIN_INFERENCE_THREADS": str(THREADS)}
        rixin = RixinProcess(Path(tmp), models=model, env=env).start()
        try:
            client = httpx.Client(base_url=rixin.api_url, headers=rixin.headers(), timeout=300)

            def via_rixin(task: Task, choice: str) -> tuple[JSONDict, float]:
                start = time.perf_counter()
                body = {"model": CHAT_MODEL, **tool_body(task, choice)}
                r = client.post("/chat/completions", json=body)
                elapsed = time.perf_counter() - start
                if r.status_code != 200:
                    return {"content": f"HTTP {r.status_code}: {r.text[:300]}"}, elapsed
                return r.json()["choices"][0]["message"], elapsed

            def via_direct(task: Task, choice: str) -> tuple[JSONDict, float]:
                start = time.perf_counter()
                res = direct.handle_chat_completions(tool_body(task, choice))
                elapsed = time.perf_counter() - start
                if "choices" not in res:
                    return {"content": f"error: {json.dumps(res)[:300]}"}, elapsed
                return res["choices"][0]["message"], elapsed

            via_direct(tasks[0], "auto")  # warm-up, both sides
            via_rixin(tasks[0], "auto")
            with out_path.open("w") as log:
                for i, task in enumerate(tasks):
                    row: JSONDict = {"i": i, "lang": task.lang, "tool": task.tool}
                    row |= {"prompt": task.prompt, "offered": task.offered}
                    order = configs if i % 2 == 0 else configs[::-1]
                    for config in order:
                        side, choice = config.split()
                        call = via_rixin if side == "rixin" else via_direct
                        message, seconds = call(task, choice)
                        outcome = judge(task, message, seconds)
                        results[config].append(outcome)
                        row[config] = outcome.__dict__
                    log.write(json.dumps(row, ensure_ascii=False) + "\n")
                    log.flush()
                    loads.append(load())
                    done = i + 1
                    if done % 10 == 0 or done == len(tasks):
                        rate = (time.monotonic() - started) / done
                        print(f"  {done}/{len(tasks)} tasks, {rate:.1f} s/task", flush=True)
            client.close()
        finally:
            rixin.stop()
    report_tools(tasks, results, med(loads))
    print(f"(per-task results: {out_path.relative_to(REPO)})")


def report_tools(tasks: list[Task], results: dict[str, list[Outcome]], ld: float) -> None:
    n = len(tasks)
    print(f"\n[tool calls] {n} tasks ({sum(t.lang == 'zh' for t in tasks)} zh), {CHAT_MODEL}")
    print(
        f"  {'config':<15} {'called':>7} {'parsed':>7} {'valid':>7} {'right':>7} {'args=':>7} "
        f"{'zh valid':>8} {'en valid':>8} {'in text':>7} {'s/call':>7}"
    )

    def share(rows: list[Outcome], attr: str) -> float:
        return 100 * sum(getattr(r, attr) for r in rows) / len(rows) if rows else float("nan")

    for config, rows in results.items():
        zh = [r for r, t in zip(rows, tasks, strict=True) if t.lang == "zh"]
        en = [r for r, t in zip(rows, tasks, strict=True) if t.lang == "en"]
        print(
            f"  {config:<15} {share(rows, 'called'):6.0f}% {share(rows, 'parsed'):6.0f}% "
            f"{share(rows, 'valid'):6.0f}% {share(rows, 'right_tool'):6.0f}% "
            f"{share(rows, 'args_match'):6.0f}% {share(zh, 'valid'):7.0f}% "
            f"{share(en, 'valid'):7.0f}% {share(rows, 'named_in_text'):6.0f}% "
            f"{med([r.seconds for r in rows]):7.2f}"
        )
    print(
        "  (args= : right tool and the argument values the prompt states, informational; "
        "in text: the right tool's name written in the message text instead of a call)"
    )
    anchor = "BENCHMARKS: raw parsers see no call (fenced JSON); goal 100 % valid"
    for choice in ("required", "auto"):
        ours = results[f"rixin {choice}"]
        peer = results.get(f"raw {choice}") or next(
            (v for k, v in results.items() if k.startswith("raw")), []
        )
        peer_name = next((k for k, v in results.items() if v is peer), "raw")
        for attr, what in (
            ("parsed", "tool-call parse rate"),
            ("valid", "tool-call schema validity"),
            ("right_tool", "tool-selection accuracy"),
        ):
            x, y = share(ours, attr), share(peer, attr)
            ratio = f"{x / y:.2f}" if y else "inf"
            print(
                f"{what}, tool_choice={choice} = {x:.0f} % (peer {peer_name} {y:.0f} %, ratio "
                f"{ratio}, anchor {anchor}), load {ld:.2f}"
            )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="overhead,stream,tools")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per side")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="mock model time")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument(
        "--peer-choices", default="required,auto", help="tool_choice values for the raw peer"
    )
    parser.add_argument("--serve-mock", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        asyncio.run(_serve_mock(args.port, args.latency_ms / 1000))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    args.peer_choices = [c for c in args.peer_choices.split(",") if c]
    parts = set(args.parts.split(","))
    print(f"load at start {load():.2f}, {os.cpu_count()} CPUs", flush=True)
    if parts & {"overhead", "stream"}:
        engine_parts(args, parts)
    if "tools" in parts:
        tools_part(args)


if __name__ == "__main__":
    main()
