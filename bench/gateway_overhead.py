"""Gateway overhead: latency rixin adds in front of an upstream, next to LiteLLM's proxy.

Three processes besides this one: a minimal mock upstream (``bench/mock_upstream.py``), ``rixin
serve`` with one ``openai_compat`` chat model pointed at the mock, and LiteLLM's proxy
(``litellm[proxy]==1.110.2`` in its own venv, created under ``.bench/`` when missing) with one
model ``fake-chat`` -> ``openai/fake-model`` on the same mock. A raw-socket asyncio load generator
(keep-alive, one connection per client) sends the same small non-streaming chat completion to the
mock directly, to rixin and to LiteLLM, alternating targets (order rotated every repetition), at
1, 4, 16 and 64 concurrent clients: a warm-up, then ``--requests`` timed requests per level,
``--reps`` repetitions. Added latency = proxy percentile - direct percentile in the same
repetition; figures are medians over repetitions, each with the load average. Also reported:
each server's CPU time per request (``/proc/<pid>/stat``; far less sensitive to the machine's
load than latency) and the best throughput with p95 < 50 ms. ``--variant NAME=PYTHONPATH`` adds
a rixin started with that path prepended, to try a change side by side.

    make bench-gateway     # or: .venv/bin/python bench/gateway_overhead.py --requests 400 --reps 3
    LITELLM_VENV=/path/to/venv make bench-gateway    # reuse an existing LiteLLM install
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import RixinProcess, free_port  # noqa: E402

LITELLM_VERSION = "1.110.2"
COMPROMISED = {"1.82.7", "1.82.8"}  # never install these (supply-chain incident)
MASTER_KEY = "sk-bench-" + "0123456789abcdef" * 2
LEVELS = (1, 4, 16, 64)
CHAT = {
    "model": "fake-chat",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 16,
}
ANCHOR = "LiteLLM docs +3.25 ms; goal rixin p50 <= 1 ms"

# --------------------------------------------------------------------------- LiteLLM venv

_PROXY_EXTRAS = r"""
import importlib.metadata as md, sys
from packaging.requirements import Requirement
out = []
for spec in md.requires("litellm") or []:
    req = Requirement(spec)
    if req.marker is None or not req.marker.evaluate({"extra": "proxy"}):
        continue
    if req.marker.evaluate({"extra": ""}):
        continue  # a base dependency, already installed
    if req.name == "litellm-proxy":
        continue  # not published on every index; the proxy code ships inside litellm itself
    if req.name in ("litellm-proxy-extras", "litellm-enterprise"):
        out.append(req.name)  # exact pins lag on mirrors; any release serves a DB-less proxy
        continue
    out.append(f"{req.name}{req.specifier}")
print("\n".join(out))
"""


def litellm_venv(path: Path) -> Path:
    """A venv with LiteLLM's proxy at the pinned release; created when missing."""
    python = path / "bin" / "python"
    if not (path / "bin" / "litellm").exists():
        print(f"creating {path} with litellm[proxy]=={LITELLM_VERSION} (once) ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        base = shutil.which("python3.11") or sys.executable
        subprocess.run([base, "-m", "venv", str(path)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        full = subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=False)
        if full.returncode != 0:
            # Some indexes lack the `litellm-proxy` meta-package the extra names: install the
            # release itself, then the extra's other requirements read from its own metadata.
            print(
                "litellm[proxy] did not resolve; installing litellm + its proxy extras", flush=True
            )
            subprocess.run([*pip, f"litellm=={LITELLM_VERSION}"], check=True)
            extras = subprocess.run(
                [str(python), "-c", _PROXY_EXTRAS], check=True, capture_output=True, text=True
            ).stdout.split()
            subprocess.run([*pip, *extras], check=True)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version in COMPROMISED:
        raise SystemExit(f"{path} holds litellm {version}, a compromised release; remove it")
    if version != LITELLM_VERSION:
        print(f"warning: {path} holds litellm {version}, not {LITELLM_VERSION}", flush=True)
    return path


# --------------------------------------------------------------------------- processes


def start_mock() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "mock_upstream.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"mock upstream did not start: {line!r}")
    return proc, int(line.split()[1])


def start_litellm(venv: Path, mock_port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: fake-chat\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "  disable_spend_logs: true\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "LITELLM_", "REDIS", "PYTHONPATH"))
    }
    env |= {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "DISABLE_ADMIN_UI": "True",
        "TELEMETRY": "False",
    }
    log = (workdir / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited:\n{(workdir / 'litellm.log').read_text()[-4000:]}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code
                == 200
            ):
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError("LiteLLM did not become ready")


# --------------------------------------------------------------------------- load generator


@dataclass
class Target:
    name: str
    port: int
    path: str
    key: str | None
    pid: int
    """The serving process, whose CPU time per request is measured (robust to load)."""
    raw: bytes = b""

    def __post_init__(self) -> None:
        body = json.dumps(CHAT).encode()
        auth = f"authorization: Bearer {self.key}\r\n" if self.key else ""
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n{auth}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.raw = head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length, chunked = 0, False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    p50: float
    p95: float
    rps: float
    errors: int
    load: float
    cpu_ms: float
    """Server CPU milliseconds per request (the mock's for ``direct``)."""
    latencies: list[float] = field(repr=False, default_factory=list)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(target: Target, clients: int, requests: int, warmup: int) -> Sample:
    conns = [await asyncio.open_connection("127.0.0.1", target.port) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    todo = 0

    async def worker(index: int, record: bool) -> None:
        nonlocal todo, errors
        while todo > 0:
            todo -= 1
            reader, writer = conns[index]
            start = time.perf_counter()
            try:
                writer.write(target.raw)
                status = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                errors += 1  # the server dropped the connection: count it, reconnect
                writer.close()
                conns[index] = await asyncio.open_connection("127.0.0.1", target.port)
                continue
            elapsed = time.perf_counter() - start
            if status != 200:
                errors += 1
            elif record:
                latencies.append(elapsed)

    try:
        todo = warmup
        await asyncio.gather(*(worker(i, False) for i in range(clients)))
        errors = 0
        todo = requests
        cpu = cpu_seconds(target.pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker(i, True) for i in range(clients)))
        wall = time.perf_counter() - start
        cpu = cpu_seconds(target.pid) - cpu
    finally:
        for _, writer in conns:
            writer.close()
    ms = [x * 1000 for x in latencies] or [float("nan")]
    load = os.getloadavg()[0]
    return Sample(
        _pct(ms, 0.5), _pct(ms, 0.95), requests / wall, errors, load, cpu * 1e3 / requests, ms
    )


# --------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _peer(value: float, peer: float | None, unit: str = " ms") -> str:
    if peer is None:
        return "peer LiteLLM not run, "
    ratio = value / peer if peer else float("nan")
    return f"peer LiteLLM {peer:.2f}{unit}, ratio {ratio:.2f}, "


def report(
    results: dict[tuple[str, int], list[Sample]],
    names: list[str],
    reps: int,
    levels: tuple[int, ...],
) -> None:
    proxies = [n for n in names if n != "direct"]
    ours = [n for n in proxies if n != "litellm"]
    print("\nabsolute, ms (median over repetitions of each repetition's percentile)")
    print(
        f"{'clients':>7} {'target':>14} {'p50':>7} {'p95':>7} {'rps':>7} {'cpu/req':>7} "
        f"{'errors':>6} {'load':>5}"
    )
    for level in levels:
        for name in names:
            samples = results[(name, level)]
            print(
                f"{level:>7} {name:>14} {_med([s.p50 for s in samples]):7.2f} "
                f"{_med([s.p95 for s in samples]):7.2f} {_med([s.rps for s in samples]):7.0f} "
                f"{_med([s.cpu_ms for s in samples]):7.2f} "
                f"{sum(s.errors for s in samples):>6} {_med([s.load for s in samples]):5.2f}"
            )
    print("\nadded latency = proxy - direct in the same repetition; median over repetitions")
    for level in levels:
        direct = results[("direct", level)]
        load = _med([s.load for name in names for s in results[(name, level)]])
        for q in ("p50", "p95"):
            added = {
                name: _med(
                    [
                        getattr(p, q) - getattr(d, q)
                        for p, d in zip(results[(name, level)], direct, strict=True)
                    ]
                )
                for name in proxies
            }
            for name in ours:
                print(
                    f"{name} added {q} @{level} clients = {added[name]:.2f} ms "
                    f"({_peer(added[name], added.get('litellm'))}anchor {ANCHOR}), load {load:.2f}"
                )
    print("\nserver CPU per request (user+sys of the serving process / requests; robust to load)")
    for level in levels:
        cpu = {name: _med([s.cpu_ms for s in results[(name, level)]]) for name in names}
        load = _med([s.load for name in names for s in results[(name, level)]])
        for name in ours:
            print(
                f"{name} CPU/request @{level} clients = {cpu[name]:.2f} ms "
                f"({_peer(cpu[name], cpu.get('litellm'))}anchor mock upstream "
                f"{cpu['direct']:.2f} ms), load {load:.2f}"
            )
    print("\nmax RPS with p95 < 50 ms (best level among those measured)")
    best = {
        name: max(
            (
                _med([s.rps for s in results[(name, level)]])
                for level in levels
                if _med([s.p95 for s in results[(name, level)]]) < 50
            ),
            default=0.0,
        )
        for name in names
    }
    load = _med([s.load for samples in results.values() for s in samples])
    for name in ours:
        print(
            f"{name} max RPS at p95 < 50 ms = {best[name]:.0f} "
            f"({_peer(best[name], best.get('litellm'), '')}anchor LiteLLM docs 1,170 RPS; "
            f"mock direct {best['direct']:.0f}), load {load:.2f}"
        )
    print(f"({reps} repetitions)")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="timed requests per level")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM peer")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=Path(os.environ.get("LITELLM_VENV", REPO / ".bench" / "litellm-venv")),
    )
    parser.add_argument("--hold", action="store_true", help="keep the servers up (for profiling)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="also measure a rixin started with this PYTHONPATH prepended (to try a change "
        "side by side without touching the checkout), e.g. proto=/tmp/overlay",
    )
    args = parser.parse_args()
    levels = tuple(int(x) for x in args.levels.split(","))

    # SIGTERM (and SIGINT, even when started in the background) unwind through `finally`, so
    # the servers this script started are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    venv = None if args.no_litellm else litellm_venv(args.litellm_venv)
    procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="rixin-gw-") as tmp:
        workdir = Path(tmp)
        mock, mock_port = start_mock()
        procs.append(mock)
        servers: list[RixinProcess] = []
        try:
            model = {
                "id": "fake-chat",
                "kind": "chat",
                "replicas": [
                    {
                        "backend": "openai_compat",
                        "base_url": f"http://127.0.0.1:{mock_port}/v1",
                        "upstream_model": "fake-model",
                        # the defaults (4 + 16 queued) are sized for a local llama.cpp; a remote
                        # upstream is given room for the 64-client level
                        "max_concurrency": max(levels),
                        "max_queue": max(levels),
                    }
                ],
            }
            targets = [Target("direct", mock_port, "/v1/chat/completions", None, mock.pid)]
            for variant in ["rixin=", *args.variant]:
                name, _, path = variant.partition("=")
                env = {"PYTHONPATH": path} if path else {}
                server = RixinProcess(workdir / name, models=[model], env=env)
                servers.append(server)
                server.start()
                assert server.proc is not None
                targets.append(
                    Target(
                        name, server.port, "/v1/chat/completions", server.admin_key, server.proc.pid
                    )
                )
            if venv is not None:
                ll, ll_port = start_litellm(venv, mock_port, workdir)
                procs.append(ll)
                targets.append(
                    Target("litellm", ll_port, "/v1/chat/completions", MASTER_KEY, ll.pid)
                )
            print("  ".join(f"{t.name} :{t.port} pid {t.pid}" for t in targets), flush=True)
            if args.hold:
                print("holding; Ctrl-C to stop", flush=True)
                with contextlib.suppress(KeyboardInterrupt, SystemExit):
                    while True:
                        time.sleep(3600)
                return
            results: dict[tuple[str, int], list[Sample]] = {}
            for rep in range(args.reps):
                order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
                for level in levels:
                    for target in order:
                        sample = asyncio.run(
                            measure(target, level, args.requests, warmup=max(50, 2 * level))
                        )
                        results.setdefault((target.name, level), []).append(sample)
                        print(
                            f"rep {rep + 1} clients {level:>2} {target.name:>7}: p50 "
                            f"{sample.p50:6.2f} ms p95 {sample.p95:6.2f} ms {sample.rps:6.0f} rps "
                            f"cpu {sample.cpu_ms:.2f} ms/req errors {sample.errors} "
                            f"load {sample.load:.2f}",
                            flush=True,
                        )
            report(results, [t.name for t in targets], args.reps, levels)
        finally:
            for server in servers:
                server.stop()
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
