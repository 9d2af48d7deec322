"""A minimal, fast OpenAI-shaped mock upstream for load tests, run as its own process.

It answers every ``POST`` with one fixed non-streaming chat completion and ``GET /v1/models`` /
``/health`` with small fixed bodies, over HTTP/1.1 keep-alive on a raw asyncio protocol (no
framework), so its own cost per request stays far below the proxies' and the same for every
caller. Prints ``READY <port>`` once listening.

    .venv/bin/python bench/mock_upstream.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

CHAT = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
    },
    separators=(",", ":"),
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "mock"}]}
).encode()
HEALTH = b'{"status":"ok"}'


def _response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


ANSWERS = {"chat": _response(CHAT), "models": _response(MODELS), "health": _response(HEALTH)}


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

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
            del self.buf[:total]
            method, _, rest = head.partition(" ")
            path = rest.split(" ", 1)[0]
            if method == "POST":
                answer = ANSWERS["chat"]
            elif path.endswith("/models"):
                answer = ANSWERS["models"]
            else:
                answer = ANSWERS["health"]
            assert self.transport is not None
            self.transport.write(answer)


async def _main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Conn, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
