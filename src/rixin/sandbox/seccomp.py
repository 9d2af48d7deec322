"""The sandbox's seccomp filter, compiled to classic BPF with libseccomp.

The filter is a **deny list with argument filters** on a default-allow base. An allow list is
stricter, but every syscall a legitimate library might make (numpy's allocator, glibc's
``clone3`` probe, ``rseq``, ``statx``, new ``*at2`` variants) has to be on it, and a missing one
shows up as an intermittent SIGSYS in user code (dify-sandbox#274, dify#38105: ~0.1 %). The other
layers already confine the code: bubblewrap's namespaces (no network, pid, ipc, uts, mount
isolation), a read-only root, a non-root uid with no capabilities and ``no_new_privs``, and
rlimits. The filter removes the kernel attack surface and the escape hatches those layers do not
cover: network sockets (beyond AF_UNIX), io_uring (which performs socket and file operations
without passing through the syscall filter), ptrace and cross-process memory access, namespace
creation (``clone`` with ``CLONE_NEW*``, ``unshare``, ``setns``; ``clone3`` whose flags live in
memory the filter cannot read gets ENOSYS so glibc falls back to ``clone``), mount APIs, bpf,
keyrings, module loading, kexec, perf events, userfaultfd, ``personality`` (disables ASLR and
selects legacy ABIs), ``open_by_handle_at`` (the classic container escape) and ``TIOCSTI``.

Denied calls fail with an errno, never SIGSYS, so code gets a Python ``OSError`` it can report.
Non-native ABIs (i386 via ``int 0x80``, x32) kill the process: libseccomp's bad-arch action.

The compiled program is handed to ``bwrap --seccomp FD``, which installs it after setting up the
namespaces and immediately before ``execve`` of the runner, so it is in force before the
interpreter starts, let alone before user code runs.

libseccomp (``libseccomp2``, present on every Debian with apt or systemd) is driven through
ctypes directly: the bindings needed are six functions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile
from functools import cache

SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7

_CLONE_NAMESPACE_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
_AF_UNIX = 1
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C

#: Syscalls denied outright with EPERM.
DENIED_SYSCALLS: tuple[str, ...] = (
    # tracing and reading other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "personality",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie", "uselib",
    # host administration
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "acct", "swapon", "swapoff", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "nfsservctl",
)  # fmt: skip


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded; the sandbox refuses to run without its filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({name}): install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(
    lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]
) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:  # not a syscall on this architecture (e.g. kernel-version-specific names)
        return
    array = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise SeccompUnavailable(f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")


def _rules(lib: ctypes.CDLL, ctx: int) -> None:
    eperm = _errno_action(errno.EPERM)
    for name in DENIED_SYSCALLS:
        _add(lib, ctx, eperm, name)
    no_family = _errno_action(errno.EAFNOSUPPORT)
    for name in ("socket", "socketpair"):
        _add(lib, ctx, no_family, name, (0, _SCMP_CMP_NE, _AF_UNIX, 0))
    for flag in _CLONE_NAMESPACE_FLAGS:
        _add(lib, ctx, eperm, "clone", (0, _SCMP_CMP_MASKED_EQ, flag, flag))
    _add(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
    for request in (_TIOCSTI, _TIOCLINUX):  # the kernel truncates the request to 32 bits
        _add(lib, ctx, eperm, "ioctl", (1, _SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, request))


@cache
def compiled_filter() -> bytes:
    """The BPF program (``struct sock_filter[]``) as ``bwrap --seccomp`` reads it."""
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        _rules(lib, ctx)
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)
