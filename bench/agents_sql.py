"""SQL statements and transactions per agent step: what ``/v1/responses`` costs the store.

Starts the mock upstream of ``agents.py`` and a ``rixin serve`` on defaults with a
``sitecustomize`` (on ``PYTHONPATH``, the checkout untouched) that counts every statement the
server's SQLAlchemy engines run (``before_cursor_execute``) and every commit, by kind and table,
and dumps the counts to a file on ``SIGUSR1``. Runs ``--requests`` 1-step responses, then
``--requests`` 2-step function-call round trips, and prints the counts per response and per step.
The job workers' idle polling is counted apart: the same number of seconds with no requests.

    .venv/bin/python bench/agents_sql.py --requests 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents import Conversations, RixinProcess, load, start_mock  # noqa: E402

SITECUSTOMIZE = """
import collections, json, os, re, signal
from sqlalchemy import event
from sqlalchemy.engine import Engine

_counts = collections.Counter()
_out = os.environ["RIXIN_SQL_COUNT_FILE"]

def _kind(sql):
    words = sql.strip().split()
    head = words[0].upper() if words else "?"
    table = ""
    for key in ("FROM", "INTO", "UPDATE"):
        m = re.search(r"\\b" + key + r"\\s+([a-z_]+)", sql, re.IGNORECASE)
        if m and m.group(1).upper() not in ("SELECT",):
            table = m.group(1)
            break
    return f"{head} {table}".strip()

@event.listens_for(Engine, "before_cursor_execute")
def _count(conn, cursor, statement, parameters, context, executemany):
    _counts["statements"] += 1
    _counts["stmt " + _kind(statement)] += 1

@event.listens_for(Engine, "commit")
def _commit(conn):
    _counts["commits"] += 1

def _dump(signum, frame):
    with open(_out + ".tmp", "w") as f:
        json.dump(dict(_counts), f)
    os.replace(_out + ".tmp", _out)

signal.signal(signal.SIGUSR1, _dump)
"""


def snapshot(pid: int, path: Path) -> Counter[str]:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(100):
        if path.exists():
            return Counter(json.loads(path.read_text()))
        time.sleep(0.02)
    raise RuntimeError("the server did not dump its SQL counts")


def report(label: str, diff: Counter[str], n: int, steps: int) -> None:
    print(f"\n[{label}] {n} conversations, {steps} step(s) each")
    per = diff["statements"] / n
    print(
        f"  statements per conversation {per:.1f} (per step {per / steps:.1f}), "
        f"commits per conversation {diff['commits'] / n:.1f} "
        f"(per step {diff['commits'] / n / steps:.1f})"
    )
    for key, value in sorted(diff.items(), key=lambda kv: -kv[1]):
        if key.startswith("stmt ") and value > 0:
            print(f"    {value / n:6.2f}  {key[5:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    mock, port = start_mock(args.latency_ms)
    model: dict[str, Any] = {
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
            site = Path(tmp) / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
            out = Path(tmp) / "counts.json"
            env = {
                "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                "RIXIN_SQL_COUNT_FILE": str(out),
            }
            rixin = RixinProcess(Path(tmp) / "data", models=[model], env=env).start()
            try:
                assert rixin.proc is not None
                pid = rixin.proc.pid
                with httpx.Client(
                    base_url=rixin.api_url, headers=rixin.headers(), timeout=60
                ) as client:
                    conv = Conversations(client)
                    conv.responses_text()
                    conv.responses_tool()
                    before = snapshot(pid, out)
                    time.sleep(args.idle_s)
                    idle = snapshot(pid, out)
                    idle.subtract(before)
                    rate = idle["statements"] / args.idle_s
                    print(
                        f"idle: {rate:.1f} statements/s, "
                        f"{idle['commits'] / args.idle_s:.1f} commits/s (job polling, sweepers)"
                    )
                    for label, fn, steps in (
                        ("1 step (text)", conv.responses_text, 1),
                        ("2 steps (function call + output)", conv.responses_tool, 2),
                    ):
                        start = snapshot(pid, out)
                        t0 = time.perf_counter()
                        for _ in range(args.requests):
                            fn()
                        elapsed = time.perf_counter() - t0
                        end = snapshot(pid, out)
                        end.subtract(start)
                        report(label, end, args.requests, steps)
                        print(
                            f"  (includes ~{rate * elapsed / args.requests:.1f} idle-polling "
                            f"statements per conversation), load {load():.2f}"
                        )
            finally:
                rixin.stop()
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait(5)


if __name__ == "__main__":
    main()
