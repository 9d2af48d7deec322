"""Helpers shared by the sandbox tests (imported as ``sandbox.support``)."""

from __future__ import annotations

import json
import os

from rixin.sandbox import SandboxPolicy, SandboxService

#: Tight limits so that every abuse test ends in seconds.
TEST_POLICY = SandboxPolicy(
    cpu_seconds=3,
    memory_bytes=512 << 20,
    max_processes=32,
    max_file_bytes=8 << 20,
    disk_bytes=32 << 20,
    max_dir_entries=2_000,
    default_timeout_s=10.0,
    wall_timeout_s=15.0,
    output_bytes=64 << 10,
    artifact_bytes=1 << 20,
    pool_size=0,
    idle_ttl_s=3600.0,
)


async def run_json(svc: SandboxService, session_id: str, code: str, **kw: object) -> dict:
    """Run code whose last stdout line is a JSON object; fail with its stderr otherwise."""
    result = await svc.run(session_id, code, **kw)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def pid_namespace_members(ns: str) -> list[int]:
    """Live host pids in pid namespace ``ns`` (``readlink /proc/self/ns/pid`` inside).

    Zombies are left out: they hold no memory, files or CPU, only a pid until their new parent
    (the host's init) reaps them.
    """
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                members.append(int(entry))
    return members
