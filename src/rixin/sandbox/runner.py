"""Entry point inside the sandbox: check confinement, apply rlimits, then run the user's code.

Trusted, stdlib only, bound read-only at ``/opt/rixin/runner.py`` and started by absolute path
as ``python -I -S -B`` (isolated: no ``PYTHON*`` variables, no user site, no script dir or cwd on
``sys.path``; no ``site`` so no ``.pth``/``sitecustomize``). By then bubblewrap has installed the
seccomp filter and ``no_new_privs``; this file refuses to go on unless it sees both, a non-root
uid and no capabilities. It lowers the rlimits, puts only the read-only site-packages on
``sys.path`` (``/work`` never is), and only then reads the code from stdin: nothing the user
controls is read before confinement is complete. Exit status 125 means the sandbox itself is
broken; anything else is the code's own status.
"""

import argparse
import os
import resource
import sys
import traceback

SETUP_FAILED = 125


def _status() -> dict[str, str]:
    with open("/proc/self/status", encoding="ascii") as fh:
        pairs = (line.split(":", 1) for line in fh if ":" in line)
        return {key: value.strip() for key, value in pairs}


def _check_confinement() -> None:
    status = _status()
    problems = []
    if status.get("Seccomp") != "2":
        problems.append("seccomp filter not installed")
    if status.get("NoNewPrivs") != "1":
        problems.append("no_new_privs not set")
    if os.getuid() == 0 or os.geteuid() == 0:
        problems.append("running as root")
    if int(status.get("CapEff", "1"), 16) != 0:
        problems.append("capabilities present")
    if problems:
        sys.stderr.write("sandbox: confinement check failed: " + ", ".join(problems) + "\n")
        sys.exit(SETUP_FAILED)


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    ceiling = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (ceiling, ceiling))


def _apply_limits(args: argparse.Namespace) -> None:
    # CPU: SIGXCPU at the soft limit, SIGKILL one second later at the hard limit
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = args.cpu if hard == resource.RLIM_INFINITY else min(args.cpu, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    _limit(resource.RLIMIT_AS, args.address_space)
    _limit(resource.RLIMIT_NPROC, args.nproc)
    _limit(resource.RLIMIT_FSIZE, args.fsize)
    _limit(resource.RLIMIT_NOFILE, args.nofile)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_MEMLOCK, 0)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rixin-sandbox-runner")
    parser.add_argument("--session", required=True)
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--as", dest="address_space", type=int, required=True)
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--fsize", type=int, required=True)
    parser.add_argument("--nofile", type=int, required=True)
    parser.add_argument("--code-bytes", type=int, required=True)
    parser.add_argument("--site", action="append", default=[])
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = _parse(argv)
    _check_confinement()
    _apply_limits(args)
    sys.path[:] = [p for p in sys.path if p and not p.startswith("/work")] + args.site
    source = sys.stdin.buffer.read(args.code_bytes + 1)  # the parent closes stdin after the code
    if len(source) > args.code_bytes:
        sys.stderr.write("sandbox: code too large\n")
        sys.exit(SETUP_FAILED)
    sys.stdin.close()
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the run
    sys.argv = ["<code>"]
    code = compile(source, "<code>", "exec", dont_inherit=True)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "<code>"}
    del args, source
    try:
        exec(code, namespace)  # noqa: S102 - this is the sandbox; the code is the user's
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # show the user's frames only, as ``python file.py`` would
        tb = exc.__traceback__
        traceback.print_exception(type(exc), exc, tb.tb_next if tb else None)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
