"""The bubblewrap command line: what the sandbox sees and what it may do.

The root is an empty tmpfs made read-only at the end; onto it go read-only binds of ``/usr``
(and the ``/bin``, ``/lib*`` links or dirs), the dynamic loader's config, the interpreter's
prefix, the service's site-packages (at ``/opt/rixin/site-N``, never their host path) and the
trusted runner. The only writable places are the session dir at ``/work`` and size-capped tmpfs
at ``/tmp`` and ``/dev/shm``. Every namespace is new (``--unshare-all``: net, pid, ipc, uts,
cgroup, user); further user namespaces are disabled; the environment is cleared.
"""

from __future__ import annotations

from pathlib import Path

from rixin.sandbox.policy import NOBODY, HostLayout, SandboxPolicy

RUNNER = "/opt/rixin/runner.py"
SETPRIV = "/usr/bin/setpriv"
TMP = "/tmp"  # noqa: S108 - the sandbox's own private, size-capped tmpfs
SHM = "/dev/shm"  # noqa: S108 - likewise
WORK = "/work"
_TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORK,
    "TMPDIR": TMP,
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": TMP,
    "XDG_CACHE_HOME": TMP,  # font caches and the like are not files the code produced
    # BLAS thread pools count against RLIMIT_NPROC and are useless on a shared host
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _parents(*paths: str) -> list[str]:
    """Create mount points' parents world-traversable (bwrap would copy the host's 0700)."""
    args: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in seen:
                seen.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _root_fs(layout: HostLayout) -> list[str]:
    args = _parents(RUNNER, _ETC[0], str(layout.prefix), str(layout.python))
    args += ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_DIRS:
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc in _ETC:
        args += ["--ro-bind-try", etc, etc]
    if not layout.prefix.is_relative_to("/usr"):
        args += ["--ro-bind", str(layout.prefix), str(layout.prefix)]
    if not layout.python.is_relative_to("/usr") and not layout.python.is_relative_to(layout.prefix):
        args += ["--ro-bind", str(layout.python), str(layout.python)]
    for index, site in enumerate(layout.site_packages):
        args += ["--ro-bind", str(site), f"/opt/rixin/site-{index}"]
    args += ["--ro-bind", str(layout.runner), RUNNER]
    return args


def sandbox_paths(layout: HostLayout) -> list[str]:
    """Where the runner finds site-packages inside the sandbox."""
    return [f"/opt/rixin/site-{index}" for index in range(len(layout.site_packages))]


def build_argv(
    layout: HostLayout,
    policy: SandboxPolicy,
    *,
    session_dir: Path,
    seccomp_fd: int,
    tag: str,
    host_uid: int | None,
    info_fd: int | None = None,
) -> list[str]:
    """The full argv: bwrap, its options, then the runner with the limits it applies.

    ``host_uid`` None: user-namespace mode (the service is not root): uid 65534 inside maps to
    the service's uid outside. Otherwise root mode: no user namespace (root's real uid would be
    exempt from RLIMIT_NPROC), and ``setpriv`` drops to ``host_uid`` before the interpreter
    starts, so the code runs as a real, per-session, unprivileged host uid.
    """
    if host_uid is None:
        identity = ["--unshare-all", "--unshare-user", "--disable-userns"]
        identity += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
        drop: list[str] = []
    else:
        identity = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        identity += ["--unshare-cgroup-try"]
        drop = [SETPRIV, "--reuid", str(host_uid), "--regid", str(host_uid), "--clear-groups"]
        drop += ["--inh-caps=-all", "--no-new-privs", "--"]
    args = [
        str(layout.bwrap),
        *identity,
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        *_root_fs(layout),
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", str(policy.tmp_bytes), "--tmpfs", SHM,
        "--perms", "1777", "--size", str(policy.tmp_bytes), "--tmpfs", TMP,
        "--bind", str(session_dir), WORK,
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", WORK,
        "--clearenv",
    ]  # fmt: skip
    for key, value in _ENV.items():
        args += ["--setenv", key, value]
    args += ["--seccomp", str(seccomp_fd)]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args += [*drop, str(layout.python), "-I", "-S", "-B", RUNNER, "--session", tag]
    args += ["--cpu", str(policy.cpu_seconds), "--as", str(policy.memory_bytes)]
    args += ["--nproc", str(policy.max_processes), "--fsize", str(policy.max_file_bytes)]
    args += ["--nofile", str(policy.max_open_files), "--code-bytes", str(policy.code_bytes)]
    for site in sandbox_paths(layout):
        args += ["--site", site]
    return args
