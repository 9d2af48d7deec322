"""The parser fork server: a clean interpreter that forks one confined child per file.

``python -I -B -m rixin.knowledge.parsing.forkserver FD`` is started by ``sandbox.ForkServer``
with the environment of a parser child (none of the server's secrets) and a ``SOCK_SEQPACKET``
control socket as descriptor ``FD``. It imports the parsing libraries once and never reads a
user's byte itself. Each request on the socket is one JSON message, ``{"id": n, "request": …}``,
carrying three descriptors: the file to parse, and the write ends of the child's stdout and
stderr. For each it forks a child that starts a session of its own (so the server can kill its
group), makes those descriptors its 0, 1 and 2 and runs ``runner.main``, which applies the
limits before the first untrusted byte is read: the same child as a fresh ``runner``
interpreter, without paying for a new interpreter and its imports on every file (~60 ms of CPU).

Replies, one message each: ``{"id": n, "pid": p}`` once forked, ``{"id": n, "status": s}`` once
reaped (``s`` as ``Popen.returncode``: negative for a signal). The server closing the socket
stops the fork server, which kills the children still running first. One thread only: forking a
threaded process can copy a lock held by another thread.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

MAX_MESSAGE = 64 * 1024


WARM = {
    "pdf": ("pypdf",),
    "docx": ("docx",),
    "pptx": ("pptx",),
    "xlsx": ("openpyxl",),
    "html": ("selectolax.lexbor",),
    "htm": ("selectolax.lexbor",),
}
"""The library a file's extension hint calls for, imported here before the first such fork
(here, not at start: a restart must be quick, as jobs wait for it)."""


def preload() -> None:
    """Import what every child parses with, so each fork starts with it loaded."""
    import rixin.knowledge.parsing.extractors  # noqa: F401
    import rixin.knowledge.parsing.faq  # noqa: F401
    import rixin.knowledge.parsing.runner  # noqa: F401


def warm(suffix: object) -> None:
    for name in WARM.get(str(suffix), ()):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:  # the child reports the missing library as it would have
                pass


def _child(request: dict[str, Any], fds: list[int], control: socket.socket) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        from rixin.knowledge.parsing.runner import main

        code = main(["runner", json.dumps(request)])
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket, running: dict[int, int]) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request_id = running.pop(pid, None)
        if request_id is not None:
            _send(control, {"id": request_id, "status": os.waitstatus_to_exitcode(status)})


def _drain(fd: int) -> None:
    try:
        while len(os.read(fd, 4096)) == 4096:
            pass
    except BlockingIOError:
        pass


def serve(control: socket.socket) -> None:
    running: dict[int, int] = {}  # pid -> request id
    wake_r, wake_w = os.pipe()  # a child's exit wakes select(): SIGCHLD writes a byte here
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    try:
        while True:
            waiting = [control.fileno(), wake_r]
            ready, _, _ = select.select(waiting, [], [], 1.0 if running else None)
            if wake_r in ready:
                _drain(wake_r)
            _reap(control, running)
            if control.fileno() not in ready:
                continue
            data, passed, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, 3)
            if not data:
                return  # the server is gone
            message = json.loads(data)
            if len(passed) != 3:
                for fd in passed:
                    os.close(fd)
                _send(control, {"id": message.get("id"), "status": 1})
                continue
            warm(message["request"].get("suffix"))
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                os.close(wake_r)
                os.close(wake_w)
                _child(message["request"], passed, control)
            for fd in passed:
                os.close(fd)
            running[pid] = int(message["id"])
            _send(control, {"id": message["id"], "pid": pid})
    finally:
        for pid in running:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    preload()
    _send(control, {"ready": True})
    serve(control)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
