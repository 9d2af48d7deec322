"""The sandbox's limits and its view of the host, as small value objects."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

#: uid and gid the code runs as, inside and (when the service runs as root) outside.
NOBODY = 65534


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """Per-run and per-session limits. Every figure is a hard ceiling, not a hint."""

    cpu_seconds: int = 30
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 64  # RLIMIT_NPROC, threads included
    max_file_bytes: int = 64 << 20  # RLIMIT_FSIZE: one file
    max_open_files: int = 256  # RLIMIT_NOFILE
    disk_bytes: int = 256 << 20  # whole session dir, enforced by the watchdog
    max_dir_entries: int = 10_000  # files + dirs in the session dir, enforced by the watchdog
    tmp_bytes: int = 64 << 20  # /tmp and /dev/shm tmpfs size each
    wall_timeout_s: float = 60.0  # upper bound for a caller's timeout_s
    default_timeout_s: float = 30.0
    output_bytes: int = 1 << 20  # stdout and stderr, each
    code_bytes: int = 1 << 20
    artifact_bytes: int = 32 << 20  # one artifact; larger files are not returned
    max_artifacts: int = 32  # per run
    idle_ttl_s: float = 20 * 60.0  # OCI code-interpreter containers expire after 20 min
    reap_interval_s: float = 30.0
    pool_size: int = 2
    max_sessions: int = 64
    max_concurrent_runs: int = 4
    watchdog_interval_s: float = 0.2
    #: When the service runs as root, each live session runs as its own host uid from
    #: ``[uid_base, uid_base + max_sessions + pool_size)``: RLIMIT_NPROC is then per session and
    #: leftovers are findable by uid. Pick a range no real account uses.
    uid_base: int = 200_000
    uid_count: int = 256
    uid_lock_dir: str = "/run/lock/rixin-sandbox"  # host-wide: uids are leased across services

    @property
    def root_mode(self) -> bool:
        """True when the service is root: bubblewrap without a user namespace, setpriv drop."""
        return os.geteuid() == 0


@dataclass(frozen=True, slots=True)
class HostLayout:
    """What of the host the sandbox sees, read-only: interpreter, stdlib, site-packages."""

    bwrap: Path
    python: Path  # the real interpreter binary, symlinks resolved
    prefix: Path  # sys.base_prefix: the stdlib lives below it
    site_packages: tuple[Path, ...] = field(default_factory=tuple)
    runner: Path = field(default_factory=lambda: Path(__file__).with_name("runner.py"))

    @classmethod
    def detect(cls) -> HostLayout | None:
        """The layout of the interpreter running rixin; None when bubblewrap is missing."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return None
        sites = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
        return cls(
            bwrap=Path(bwrap),
            python=Path(sys.executable).resolve(),
            prefix=Path(sys.base_prefix).resolve(),
            site_packages=tuple(sorted(p.resolve() for p in sites if p.is_dir())),
        )
