"""S7 artifacts are untrusted; S8 cleanup and expiry; the warm pool."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from rixin.errors import NotFound
from rixin.sandbox import SandboxService
from rixin.sandbox.service import uid_processes
from sandbox.support import TEST_POLICY, pid_namespace_members, run_json

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


async def test_s7_artifacts_untrusted(service: SandboxService, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret canary")
    session = await service.create_session("proj")
    code = f"""
import os
os.makedirs("/work/static", exist_ok=True)
open("/work/static/x.js", "w").write("alert(1)")
open("/work/..evil.html", "w").write("<script>alert(1)</script>")
open("/work/photo.txt", "wb").write({PNG!r})
open("/work/fake.png", "w").write("<svg onload=alert(1)>")
open("/work/big.bin", "wb").write(b"b" * (2 << 20))
os.symlink({str(secret)!r}, "/work/link.txt")
os.symlink("/etc/ld.so.cache", "/work/link2.txt")
os.mkfifo("/work/pipe")
os.link("/work/photo.txt", "/work/hard.txt")
"""
    result = await service.run(session.id, code, files_in={"input.csv": b"a,b\n1,2\n"})
    assert result.exit_code == 0, result.stderr
    by_name = {a.name: a for a in result.files_out}
    assert set(by_name) == {"x.js", "evil.html", "photo.txt", "fake.png", "hard.txt"}
    assert by_name["photo.txt"].mime == "image/png"  # sniffed, not from the name
    assert by_name["fake.png"].mime == "text/plain"  # markup never comes back renderable
    assert by_name["evil.html"].mime == "text/plain"
    store = session.store.resolve()
    for artifact in result.files_out:
        assert artifact.path.resolve().parent == store
        assert artifact.path.name == artifact.id and artifact.id.startswith("cfile_")
        assert not artifact.path.is_symlink() and artifact.size <= TEST_POLICY.artifact_bytes
        assert b"host secret canary" not in artifact.path.read_bytes()
    # the returned copy cannot be changed or re-pointed by later code
    photo = by_name["photo.txt"].path
    await service.run(
        session.id, "import os; os.remove('/work/photo.txt'); os.symlink('/etc', '/work/photo.txt')"
    )
    assert photo.read_bytes() == PNG
    # an image written the way matplotlib would is returned
    result = await service.run(
        session.id,
        "from PIL import Image\nImage.new('RGB', (8, 8)).save('/work/chart.png')",
    )
    assert [(a.name, a.mime) for a in result.files_out] == [("chart.png", "image/png")]


async def _pid_ns(service: SandboxService, session_id: str) -> str:
    out = await run_json(
        service,
        session_id,
        "import json, os, subprocess\n"
        "subprocess.Popen(['/bin/sleep', '300'], start_new_session=True)\n"
        "open('/work/keep.txt', 'w').write('x')\n"
        "print(json.dumps({'ns': os.readlink('/proc/self/ns/pid')}))",
    )
    return str(out["ns"])


async def test_s8_cleanup(service: SandboxService) -> None:
    session = await service.create_session("proj")
    ns = await _pid_ns(service, session.id)
    # a background process does not outlive the run that started it
    await asyncio.sleep(0.2)
    assert pid_namespace_members(ns) == []
    uid = session.host_uid
    assert (session.dir / "keep.txt").exists()
    with pytest.raises(NotFound):  # another project cannot see, run in or close it
        await service.run(session.id, "print(1)", project_id="other")
    with pytest.raises(NotFound):
        await service.close_session(session.id, project_id="other")
    await service.close_session(session.id, project_id="proj")
    assert not session.dir.exists() and not session.store.exists()
    if uid is not None:
        assert uid_processes(uid) == []
    with pytest.raises(NotFound):
        await service.run(session.id, "print(1)")
    assert os.listdir(service.root / "sessions") == []


async def test_s8_idle_expiry(tmp_path: Path) -> None:
    policy = dataclasses.replace(TEST_POLICY, idle_ttl_s=0.5, reap_interval_s=0.2, pool_size=1)
    service = SandboxService(tmp_path / "sandbox", policy)
    try:
        session = await service.create_session("proj")
        await _pid_ns(service, session.id)
        await asyncio.sleep(1.5)  # the background reaper closes it
        assert not session.dir.exists()
        with pytest.raises(NotFound):
            await service.run(session.id, "print(1)")
        if session.host_uid is not None:
            assert uid_processes(session.host_uid) == []
    finally:
        await service.aclose()
    assert os.listdir(service.root / "sessions") == []
    assert os.listdir(service.root / "artifacts") == []


async def test_warm_pool_serves_confined_interpreters(tmp_path: Path) -> None:
    policy = dataclasses.replace(TEST_POLICY, pool_size=2)
    service = SandboxService(tmp_path / "sandbox", policy)
    try:
        await service.start()
        for _ in range(50):
            if len(service._pool) == 2:
                break
            await asyncio.sleep(0.05)
        session = await service.create_session("proj")
        await asyncio.sleep(0.3)
        first = await service.run(session.id, "print('a')")
        await asyncio.sleep(0.3)
        second = await service.run(session.id, "print('b')")
        assert first.warm and second.warm
        assert (first.stdout, second.stdout) == ("a\n", "b\n")
    finally:
        await service.aclose()
    assert os.listdir(service.root / "sessions") == []
