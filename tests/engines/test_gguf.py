"""GGUF header checks: malformed, lying or unsafe files are refused without crashing."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from rixin.engines.gguf import check_model_file, read_header
from rixin.errors import ModelUnavailable


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _str(key) + struct.pack("<II", 4, value)


def _kv_str(key: str, value: str) -> bytes:
    return _str(key) + struct.pack("<I", 8) + _str(value)


def _kv_str_array(key: str, values: list[str]) -> bytes:
    body = b"".join(_str(v) for v in values)
    return _str(key) + struct.pack("<IIQ", 9, 8, len(values)) + body


def _tensor(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    info = _str(name) + struct.pack("<I", len(dims))
    info += b"".join(struct.pack("<Q", d) for d in dims)
    return info + struct.pack("<IQ", ggml_type, offset)


def build(
    kvs: list[bytes] | None = None,
    tensors: list[bytes] | None = None,
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes = b"\0" * 64,
    alignment: int = 32,
) -> bytes:
    kvs = (
        [_kv_str("general.architecture", "llama"), _kv_str_array("tokens", ["<a>", "<b>"])]
        if kvs is None
        else kvs
    )
    tensors = [_tensor("w", [4, 4], 0, 0)] if tensors is None else tensors
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        n_tensors if n_tensors is not None else len(tensors),
        n_kv if n_kv is not None else len(kvs),
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = -len(body) % alignment
    return body + b"\0" * pad + data


def write(tmp_path: Path, content: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelUnavailable) as info:
        check_model_file(path)
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value.message


def test_minimal_valid_file(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, build()), probe=["<b>", "<c>"])
    assert header.version == 3
    assert header.tensor_count == 1
    assert header.metadata["general.architecture"] == "llama"
    assert header.array_lengths == {"tokens": 2}
    assert header.found_strings == {"<b>"}


def test_real_packaged_model(fast_model_path: Path) -> None:
    header = read_header(fast_model_path, probe=["<|fim_prefix|>", "<|fim_middle|>"])
    assert header.metadata["general.architecture"] == "qwen2"
    assert header.found_strings == {"<|fim_prefix|>", "<|fim_middle|>"}
    assert header.tensor_count > 100


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"GGML" + b"\0" * 60, "bad magic"),
        (b"\0" * 64, "bad magic"),
        (build(version=1), "version 1"),
        (build(version=99), "version 99"),
        (build(n_tensors=2**63), "tensor count"),
        (build(n_kv=10**7), "metadata count"),
        (build(n_kv=3), "past end of file"),  # claims more key/values than there are
        (build(n_tensors=3), "past end of file"),
    ],
)
def test_malformed_headers(tmp_path: Path, content: bytes, fragment: str) -> None:
    refused(write(tmp_path, content), "not a valid GGUF", fragment)


def test_tiny_file(tmp_path: Path) -> None:
    refused(write(tmp_path, b"GGUF" + struct.pack("<I", 3) + b"\0" * 3), "truncated")


def test_string_length_past_eof(tmp_path: Path) -> None:
    lying = _str("general.name") + struct.pack("<IQ", 8, 2**40) + b"short"
    refused(write(tmp_path, build([lying], [])), "past end of file")


def test_key_length_past_eof(tmp_path: Path) -> None:
    lying = struct.pack("<Q", 2**62) + b"k"
    refused(write(tmp_path, build([lying], [])), "key length")


def test_array_length_past_eof(tmp_path: Path) -> None:
    strings = _str("tokens") + struct.pack("<IIQ", 9, 8, 2**60) + _str("a")
    refused(write(tmp_path, build([strings], [])), "past end of file")
    numbers = _str("scores") + struct.pack("<IIQ", 9, 6, 2**61) + b"\0" * 8
    refused(write(tmp_path, build([numbers], [])), "past end of file")


def test_deeply_nested_arrays(tmp_path: Path) -> None:
    nested = _str("deep") + struct.pack("<IIQ", 9, 9, 1) * 10 + struct.pack("<IQ", 4, 0)
    refused(write(tmp_path, build([nested], [])), "nested")


def test_unknown_value_type(tmp_path: Path) -> None:
    refused(write(tmp_path, build([_str("x") + struct.pack("<I", 77)], [])), "type 77")


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_bad_alignment(tmp_path: Path, alignment: int) -> None:
    content = build([_kv_u32("general.alignment", alignment)])
    refused(write(tmp_path, content), "alignment")


def test_tensor_offset_beyond_eof(tmp_path: Path) -> None:
    content = build(tensors=[_tensor("w", [4, 4], 0, 2**40)])
    refused(write(tmp_path, content), "'w'", "past end of file")


def test_tensor_data_runs_past_eof(tmp_path: Path) -> None:
    # 64 bytes of data but a 32x32 F32 tensor needs 4096.
    content = build(tensors=[_tensor("w", [32, 32], 0, 0)])
    refused(write(tmp_path, content), "past end of file")


def test_misaligned_tensor_offset_and_too_many_dims(tmp_path: Path) -> None:
    refused(write(tmp_path, build(tensors=[_tensor("w", [1], 0, 4)])), "not aligned")
    refused(write(tmp_path, build(tensors=[_tensor("w", [1] * 9, 0, 0)])), "dimensions")


def test_every_truncation_of_a_valid_file_is_refused(tmp_path: Path) -> None:
    content = build(tensors=[_tensor("w", [4, 4], 0, 0)], data=b"\0" * 64)
    for cut in range(0, len(content) - 1, 7):
        with pytest.raises(ModelUnavailable):
            check_model_file(write(tmp_path, content[:cut]))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".pkl"])
def test_pickle_suffixes_are_refused_even_with_gguf_inside(tmp_path: Path, suffix: str) -> None:
    refused(write(tmp_path, build(), "model" + suffix), "pickle")


def test_pickle_content_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)
    refused(write(tmp_path, payload, "model.gguf"), "pickle")


def test_torch_zip_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps([1, 2, 3]))
    refused(path, "zip")


def test_missing_file(tmp_path: Path) -> None:
    refused(tmp_path / "absent.gguf", "cannot read")
