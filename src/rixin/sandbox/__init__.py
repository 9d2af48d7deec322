"""The code interpreter sandbox: confined, resource-bounded Python sessions for agents.

Layers, outermost first (each module's docstring says why it is built the way it is):

- ``bwrap``: bubblewrap namespaces (no network, own pid/ipc/uts), read-only root, a private
  writable ``/work`` per session, size-capped ``/tmp``, cleared environment, ``--die-with-parent``.
- ``seccomp``: a deny-list BPF filter with argument checks, installed by bubblewrap before the
  interpreter starts.
- ``runner``: the trusted in-sandbox entry point; checks confinement, applies rlimits, only then
  reads the user's code.
- ``process``: the parent's bounds (wall clock, output size, session disk quota) and teardown.
- ``artifacts``: files in and out, treated as hostile.
- ``session`` / ``pool`` / ``service``: per-session dirs and uids, warm interpreters, idle
  expiry, and the async API.
"""

from rixin.sandbox.artifacts import Artifact
from rixin.sandbox.policy import HostLayout, SandboxPolicy
from rixin.sandbox.service import ExecResult, SandboxService, SandboxUnavailable
from rixin.sandbox.session import Session

__all__ = [
    "Artifact",
    "ExecResult",
    "HostLayout",
    "SandboxPolicy",
    "SandboxService",
    "SandboxUnavailable",
    "Session",
]
