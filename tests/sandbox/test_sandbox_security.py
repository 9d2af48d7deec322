"""S1–S5: network, filesystem and process confinement, confinement order, limits, privileges."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rixin.errors import InvalidRequest
from rixin.sandbox import SandboxService
from sandbox.support import run_json


def _listener() -> tuple[socket.socket, list[int], threading.Event]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, accepted, stop


NETWORK_PROBE = """
import json, socket
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
def tcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect((host, port))
attempt("loopback", lambda: tcp("127.0.0.1", PORT))
attempt("metadata", lambda: tcp("169.254.169.254", 80))
attempt("tcp6", lambda: socket.create_connection(("::1", PORT), timeout=2))
attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
udp = lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53))
attempt("udp", udp)
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
print(json.dumps(out))
"""


async def test_s1_no_network(service: SandboxService) -> None:
    server, accepted, stop = _listener()
    port = server.getsockname()[1]
    try:
        session = await service.create_session("proj")
        out = await run_json(service, session.id, NETWORK_PROBE.replace("PORT", str(port)))
    finally:
        stop.set()
        server.close()
    assert set(out) == {"loopback", "metadata", "tcp6", "dns", "udp", "raw", "packet", "netlink"}
    assert all(value != "ok" for value in out.values()), out
    for name in ("loopback", "metadata", "udp", "raw", "packet", "netlink"):
        assert "Address family not supported" in out[name], out  # the seccomp filter
    assert accepted == []


async def test_s2_filesystem_confinement(
    service: SandboxService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIXIN_TEST_CANARY", "canary-7f3e")
    db = tmp_path / "rixin.db"
    db.write_text("platform database canary-db")
    other = await service.create_session("other-project")
    await service.run(other.id, "open('/work/secret.txt', 'w').write('canary-other')")
    session = await service.create_session("proj")
    probe = f"""
import json, os
out = {{}}
def attempt(name, fn):
    try:
        out[name] = "ok: " + str(fn())[:200]
    except Exception as exc:
        out[name] = "denied: " + type(exc).__name__
read = lambda p: open(p, "rb").read()
def write(p):
    with open(p, "w") as fh:
        fh.write("x")
def link_read(target):
    os.symlink(target, "/work/escape")
    try:
        return read("/work/escape")
    finally:
        os.unlink("/work/escape")
attempt("shadow", lambda: read("/etc/shadow"))
attempt("passwd", lambda: read("/etc/passwd"))
attempt("db", lambda: read({str(db)!r}))
attempt("pid1_environ", lambda: read("/proc/1/environ"))
attempt("parent_environ", lambda: read(f"/proc/{{os.getppid()}}/environ"))
attempt("other_session", lambda: read({str(other.dir / "secret.txt")!r}))
attempt("dotdot", lambda: read("/work/../../" + {str(other.dir / "secret.txt")!r}))
attempt("symlink", lambda: link_read({str(db)!r}))
attempt("root_home", lambda: read("/root/.profile"))
for target in ("/x", "/usr/x", "/etc/x", "/opt/rixin/x", "/opt/rixin/runner.py", "/proc/x"):
    attempt("write " + target, lambda t=target: write(t))
attempt("write /work", lambda: write("/work/mine.txt"))
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["self"] = os.getpid()
out["environ"] = dict(os.environ)
print(json.dumps(out))
"""
    out = await run_json(service, session.id, probe)
    text = json.dumps(out)
    for secret in ("canary-7f3e", "canary-db", "canary-other"):
        assert secret not in text, out
    for name in ("shadow", "db", "other_session", "dotdot", "symlink", "root_home"):
        assert out[name].startswith("denied"), (name, out[name])
    for name in ("pid1_environ", "parent_environ"):  # unreadable, or bwrap's own (empty) env
        assert out[name].startswith("denied") or "RIXIN" not in out[name]
    for name, value in out.items():
        if name.startswith("write /") and name != "write /work":
            assert value.startswith("denied"), (name, value)
    assert out["write /work"].startswith("ok")
    assert out["pids"] == [1, out["self"]]  # bwrap's reaper and us: no host process visible
    assert not any(k.startswith(("RIXIN", "LD_", "PYTHON")) for k in out["environ"])


SHADOWS = {
    "sitecustomize.py": "open('/work/HACKED-sitecustomize', 'w').close()\n",
    "usercustomize.py": "open('/work/HACKED-usercustomize', 'w').close()\n",
    "evil.pth": "import os; open('/work/HACKED-pth', 'w').close()\n",
    "json.py": "open('/work/HACKED-json', 'w').close()\n",
    "encodings.py": "open('/work/HACKED-encodings', 'w').close()\n",
    "numpy.py": "open('/work/HACKED-numpy', 'w').close()\n",
}


async def test_s3_confinement_before_user_code(
    service: SandboxService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "PYTHONPATH": "/work",
        "PYTHONSTARTUP": "/work/json.py",
        "PYTHONHOME": "/work",
        "LD_PRELOAD": "/work/evil.so",
        "PYTHONINSPECT": "1",
    }.items():
        monkeypatch.setenv(key, value)
    session = await service.create_session("proj")
    files = {name: body.encode() for name, body in SHADOWS.items()}
    result = await service.run(session.id, "print('seeded')", files_in=files)
    assert result.exit_code == 0, result.stderr
    out = await run_json(
        service,
        session.id,
        "import json, os, sys, numpy\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n"
        "print(json.dumps({'json': json.__file__, 'numpy': numpy.__file__, 'path': sys.path,"
        " 'seccomp': status['Seccomp'].strip(), 'files': sorted(os.listdir('/work')),"
        " 'env': sorted(os.environ)}))",
    )
    assert out["json"].endswith("/lib/python3.11/json/__init__.py")
    assert out["numpy"].startswith("/opt/rixin/site-")
    assert not any(p.startswith("/work") or p in ("", ".") for p in out["path"])
    assert out["seccomp"] == "2"
    assert not [name for name in out["files"] if name.startswith("HACKED")]
    assert not [name for name in out["env"] if name.startswith(("PYTHON", "LD_"))]
    # names that try to leave the session dir are refused, nothing is written outside
    for bad in ("../escape.txt", "/etc/x", "a/../../b", "..", "", "x\x00y"):
        with pytest.raises(InvalidRequest):
            await service.run(session.id, "pass", files_in={bad: b"x"})
    assert not (session.dir.parent / "escape.txt").exists()


def test_s3_runner_refuses_without_confinement(tmp_path: Path) -> None:
    """The runner checks seccomp/no_new_privs/uid itself before it reads any code."""
    runner = Path(__import__("rixin.sandbox.runner").sandbox.runner.__file__)
    canary = tmp_path / "ran"
    argv = [sys.executable, "-I", "-S", str(runner), "--session", "t", "--cpu", "5"]
    argv += ["--as", str(1 << 30), "--nproc", "64", "--fsize", "1000000", "--nofile", "64"]
    argv += ["--code-bytes", "1000"]
    done = subprocess.run(
        argv, input=f"open({str(canary)!r}, 'w')".encode(), capture_output=True, timeout=30
    )
    assert done.returncode == 125
    assert b"confinement check failed" in done.stderr
    assert not canary.exists()


ABUSE = {
    "fork_bomb": (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('fork refused after', n, exc)\n"
        "    raise SystemExit(3)\n"
    ),
    "alloc_10g": "x = bytearray(10 * 1024**3)\n",
    "busy_loop": "while True:\n    pass\n",
    "file_10g": (
        "with open('/work/big', 'wb') as fh:\n"
        "    chunk = b'x' * (1 << 20)\n"
        "    for _ in range(10 * 1024):\n"
        "        fh.write(chunk)\n"
    ),
    "million_files": (
        "import os\n"
        "os.mkdir('/work/many')\n"
        "for i in range(10**6):\n"
        "    open(f'/work/many/{i}', 'w').close()\n"
    ),
    "stdout_1g": (
        "import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    ),
}


@pytest.mark.parametrize("case", sorted(ABUSE))
async def test_s4_resource_limits(service: SandboxService, case: str) -> None:
    session = await service.create_session("proj")
    neighbour = await service.create_session("proj")
    started = time.monotonic()
    abuse = asyncio.ensure_future(service.run(session.id, ABUSE[case], timeout_s=10))
    await asyncio.sleep(0.5)
    quick = await service.run(neighbour.id, "print(sum(range(1000)))")
    result = await abuse
    elapsed = time.monotonic() - started
    assert quick.exit_code == 0 and quick.stdout.strip() == "499500"
    assert elapsed < 12, (case, elapsed)
    assert result.exit_code != 0, (case, result)
    expected = {
        "fork_bomb": ("fork refused", None),
        "alloc_10g": ("MemoryError", None),
        "busy_loop": ("CPU time limit", "cpu_limit"),
        "file_10g": ("File too large", None),
        "million_files": ("disk quota", "disk_quota"),
        "stdout_1g": ("output limit", "output_limit"),
    }[case]
    assert expected[0] in result.stdout + result.stderr, (case, result.stderr[-500:])
    assert result.killed_reason == expected[1], (case, result.killed_reason)
    if case == "stdout_1g":
        assert len(result.stdout) < 2 * service.policy.output_bytes
        assert "[output truncated" in result.stdout
    if case == "busy_loop":
        assert not result.timed_out and result.duration_s < 8
    # the session survives its own abuse
    again = await service.run(session.id, "print('alive')")
    assert again.stdout.strip() == "alive"


PRIVILEGE_PROBE = r"""
import ctypes, errno, json, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
out = {k: status[k].strip() for k in ("Uid", "Gid", "NoNewPrivs", "Seccomp", "CapEff", "CapPrm")}
out["ptrace"] = sys_call(101, 0, 0, 0, 0)          # PTRACE_TRACEME
out["mount"] = sys_call(165, 0, 0, 0, 0, 0)
out["umount"] = sys_call(166, 0, 0)
out["unshare_user"] = sys_call(272, 0x10000000)
out["unshare_net"] = sys_call(272, 0x40000000)
out["clone_newuser"] = sys_call(56, 0x10000000 | 17, 0, 0, 0, 0)
out["clone3"] = sys_call(435, 0, 0)
out["setns"] = sys_call(308, 0, 0)
out["bpf"] = sys_call(321, 0, 0, 0)
out["keyctl"] = sys_call(250, 0, 0, 0)
out["add_key"] = sys_call(248, 0, 0, 0, 0, 0)
out["perf_event_open"] = sys_call(298, 0, 0, 0, 0, 0)
out["userfaultfd"] = sys_call(323, 0)
out["personality"] = sys_call(135, 0x0040000)      # ADDR_NO_RANDOMIZE
out["io_uring_setup"] = sys_call(425, 8, 0)
out["init_module"] = sys_call(175, 0, 0, 0)
out["chroot"] = sys_call(161, 0)
out["setuid0"] = sys_call(105, 0)
su = subprocess.run(["/usr/bin/su", "-c", "id", "root"], capture_output=True, text=True, input="")
out["su"] = su.returncode
mnt = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "x", "/tmp"], capture_output=True, text=True)
out["mount_bin"] = mnt.returncode
print(json.dumps(out))
"""


async def test_s5_privilege_reduction(service: SandboxService) -> None:
    session = await service.create_session("proj")
    out = await run_json(service, session.id, PRIVILEGE_PROBE)
    assert all(uid != "0" for uid in out["Uid"].split()), out["Uid"]
    assert all(gid != "0" for gid in out["Gid"].split()), out["Gid"]
    assert out["NoNewPrivs"] == "1" and out["Seccomp"] == "2"
    assert int(out["CapEff"], 16) == 0 and int(out["CapPrm"], 16) == 0
    for call in (
        "ptrace", "mount", "umount", "unshare_user", "unshare_net", "clone_newuser", "setns",
        "bpf", "keyctl", "add_key", "perf_event_open", "userfaultfd", "personality",
        "io_uring_setup", "init_module", "chroot",
    ):  # fmt: skip
        assert out[call] == "EPERM", (call, out[call])
    assert out["clone3"] == "ENOSYS"  # so glibc falls back to clone(), whose flags are checked
    assert out["setuid0"] == "EPERM"
    assert out["su"] != 0 and out["mount_bin"] != 0
