"""Hash-pinned installs and the start-up hook audit (RELIABILITY C1).

The LiteLLM 1.82.7/1.82.8 compromise shipped a ``.pth`` file: Python runs the ``import`` lines of
every ``.pth`` in site-packages at interpreter start, before any of our code. So the lock pins
every requirement by hash, the Makefile refuses anything else, and an unknown ``.pth`` or a
``sitecustomize``/``usercustomize`` module fails the build.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from harness import REPO

LOCK = REPO / "requirements.lock"
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+)$")
SHA256 = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")

# Each allowed start-up hook, and why it is safe.
DISTUTILS_PRECEDENCE = (
    # setuptools' shim: makes ``import distutils`` resolve to setuptools' copy; it imports only
    # setuptools' own ``_distutils_hack``. Pinned by content, so a tampered copy fails.
    "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') "
    "== 'local'; enabled and __import__('_distutils_hack').add_shim(); "
)
EDITABLE = re.compile(r"^__editable__\.rixin-[0-9][0-9A-Za-z.+-]*\.pth$")
"""``pip install -e .`` of rixin itself: a path line (our ``src``), no code."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes), from the lock's ``name==version \\ --hash=…`` blocks."""
    logical: list[str] = []
    pending = ""
    for raw in LOCK.read_text().splitlines():
        line = (
            raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        )
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the lock ends inside a continuation"
    entries: dict[str, tuple[str, list[str]]] = {}
    for entry in logical:
        requirement, *options = entry.split()
        assert not requirement.startswith("-"), f"option lines are not allowed: {entry!r}"
        match = REQUIREMENT.match(requirement.split(";", 1)[0])
        assert match, f"not pinned with ==: {requirement!r}"
        assert options and all(SHA256.match(o) for o in options), f"no sha256 hash: {requirement}"
        entries[_normalise(match["name"])] = (match["version"], options)
    return entries


def test_c1_lock_pins_every_requirement_by_hash() -> None:
    """C1: every lock entry is ``name==version`` with sha256 hashes; every direct dependency of
    pyproject (runtime and extras) is in the lock at the same version."""
    entries = _lock_entries()
    assert len(entries) > 20
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        direct.extend(extra)
    for spec in direct:
        match = REQUIREMENT.match(spec.replace(" ", ""))
        assert match, f"pyproject dependency not pinned with ==: {spec!r}"
        name = _normalise(match["name"])
        assert name in entries, f"{name} missing from requirements.lock"
        assert entries[name][0] == match["version"], f"{name}: lock and pyproject disagree"


def test_c1_makefile_installs_with_require_hashes() -> None:
    """C1: the only install of third-party code is ``--require-hashes`` from the lock; rixin
    itself goes in with ``--no-deps`` so it cannot pull anything unpinned."""
    makefile = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if "pip install" in line]
    assert any("--require-hashes -r requirements.lock" in line for line in installs)
    for line in installs:
        assert (
            "--require-hashes" in line
            or "--no-deps -e ." in line
            or re.search(r'pip install --quiet --upgrade "pip==[0-9.]+"', line)
            or re.search(r'pip install --quiet "uv==[0-9.]+"', line)  # `make lock`, developers
        ), f"unpinned install in the Makefile: {line}"


def test_c1_pip_refuses_hash_mismatch_and_unpinned(tmp_path: Path) -> None:
    """C1: pip in ``--require-hashes`` mode refuses a tampered artifact and an unpinned
    requirement (offline, against a local wheel)."""
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / "canary-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("canary/__init__.py", "raise SystemExit('must never be installed')\n")
    cases = {
        "mismatch": f"{wheel} --hash=sha256:{'0' * 64}\n",
        "unpinned": "canary>=1.0\n",
    }
    for name, requirement in cases.items():
        requirements = tmp_path / f"{name}.txt"
        requirements.write_text(requirement)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--isolated",
                "--no-index",
                "--find-links",
                str(links),
                "--no-deps",
                "--disable-pip-version-check",
                "--require-hashes",
                "--target",
                str(tmp_path / "target"),
                "-r",
                str(requirements),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0, (name, result.stdout)
        assert "hash" in (result.stderr + result.stdout).lower(), (name, result.stderr)
        assert not (tmp_path / "target" / "canary").exists()


def test_c1_no_unknown_startup_hooks() -> None:
    """C1: site-packages holds only reviewed ``.pth`` files and no customize modules."""
    roots = {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    unknown = []
    for root in sorted(roots):
        for hook in ("sitecustomize.py", "usercustomize.py"):
            assert not (root / hook).exists(), f"{root / hook} runs at every interpreter start"
        for pth in sorted(root.glob("*.pth")):
            text = pth.read_text()
            if pth.name == "distutils-precedence.pth":
                assert text.strip() == DISTUTILS_PRECEDENCE.strip(), f"{pth} was modified"
            elif EDITABLE.match(pth.name):
                lines = [line for line in text.splitlines() if line.strip()]
                assert len(lines) == 1 and Path(lines[0]).resolve() == REPO / "src", text
            else:
                unknown.append(pth.name)
    assert not unknown, f"unreviewed .pth start-up hooks: {unknown}"
