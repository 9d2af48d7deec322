"""Refuse malformed or unsafe model files before llama.cpp parses them.

llama.cpp's GGUF reader has had out-of-bounds bugs on lying headers, and pickle-based formats
(``.bin``, ``.pt``, ``.pth``, ``.pkl``) run code when loaded. ``check_model_file`` walks the GGUF
header here in Python, every length checked against the end of the file, and refuses anything that
is not a well-formed GGUF v2/v3. It reads the header and tensor index only, never tensor data.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from rixin.errors import ModelUnavailable

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = frozenset({2, 3})
MAX_COUNT = 1_000_000
"""Upper bound for the tensor and metadata counts; real models have hundreds to a few thousand."""
MAX_KEY_BYTES = 65_535
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 4
DEFAULT_ALIGNMENT = 32

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})

# GGUF metadata value types: id -> struct format of a fixed-size value.
_FIXED = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9

# ggml tensor types whose size we know: id -> (elements per block, bytes per block). Tensors of
# other (newer) types only get their offset checked.
_GGML_BLOCKS = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    30: (1, 2),  # BF16
}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class GGUFHeader:
    """What the header walk learned: scalar metadata, array lengths, probed tokens."""

    version: int
    tensor_count: int
    metadata: dict[str, Scalar] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    found_strings: frozenset[str] = frozenset()
    """Those of the probed strings that occur in a string array (e.g. the token list)."""


class _Malformed(Exception):
    pass


def check_model_file(path: Path | str) -> None:
    """Raise ModelUnavailable unless ``path`` is a well-formed GGUF v2/v3 file."""
    read_header(path)


def read_header(path: Path | str, *, probe: Collection[str] = ()) -> GGUFHeader:
    """Validate ``path`` and return its header; ``probe``: strings to look for in string arrays."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelUnavailable(
            f"refusing model file {str(path)!r}: {path.suffix} files are pickle-based and can run "
            "code when loaded; convert the model to GGUF"
        )
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if size < 24:
                raise ModelUnavailable(f"model file {str(path)!r} is truncated ({size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _Reader(buf, size, probe).header(str(path))
    except OSError as exc:
        raise ModelUnavailable(f"cannot read model file {str(path)!r}: {exc}") from exc
    except _Malformed as exc:
        raise ModelUnavailable(f"model file {str(path)!r} is not a valid GGUF file: {exc}") from exc


def _sniff(head: bytes) -> str | None:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (PyTorch checkpoint)"
    if head[8:9] == b"{":
        return "a safetensors file"
    return None


class _Reader:
    def __init__(self, buf: mmap.mmap, size: int, probe: Collection[str]) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0
        self.probe = {p.encode("utf-8") for p in probe}
        self.found: set[str] = set()

    def header(self, name: str) -> GGUFHeader:
        magic = self.take(4)
        if magic != GGUF_MAGIC:
            kind = _sniff(self.buf[:16])
            if kind is not None:
                raise ModelUnavailable(
                    f"refusing model file {name!r}: it is {kind}, not GGUF; pickle-based formats "
                    "can run code when loaded"
                )
            raise _Malformed(f"bad magic {magic!r}, expected {GGUF_MAGIC!r}")
        version = self.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise _Malformed(f"unsupported GGUF version {version}")
        tensor_count = self.unpack("<Q")
        kv_count = self.unpack("<Q")
        # Every tensor info takes at least 24 bytes and every key/value at least 13.
        if tensor_count > MAX_COUNT or tensor_count * 24 > self.size:
            raise _Malformed(f"implausible tensor count {tensor_count}")
        if kv_count > MAX_COUNT or kv_count * 13 > self.size:
            raise _Malformed(f"implausible metadata count {kv_count}")
        metadata: dict[str, Scalar] = {}
        arrays: dict[str, int] = {}
        for _ in range(kv_count):
            key = self.key()
            vtype = self.unpack("<I")
            if vtype == _ARRAY:
                arrays[key] = self.array(0)
            else:
                metadata[key] = self.scalar(vtype)
        self.tensors(tensor_count, self.alignment(metadata))
        return GGUFHeader(version, tensor_count, metadata, arrays, frozenset(self.found))

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Malformed(f"read of {n} bytes at offset {self.pos} runs past end of file")
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Malformed(f"length {n} at offset {self.pos} runs past end of file")
        self.pos += n

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return int(value)

    def key(self) -> str:
        n = self.unpack("<Q")
        if n == 0 or n > MAX_KEY_BYTES:
            raise _Malformed(f"metadata key length {n} at offset {self.pos - 8}")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Malformed(f"metadata key at offset {self.pos - n} is not UTF-8") from exc

    def string(self) -> bytes:
        return self.take(self.unpack("<Q"))

    def scalar(self, vtype: int) -> Scalar:
        if vtype == _STRING:
            return self.string().decode("utf-8", errors="replace")
        fmt = _FIXED.get(vtype)
        if fmt is None:
            raise _Malformed(f"unknown metadata value type {vtype} at offset {self.pos - 4}")
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return value  # type: ignore[no-any-return]

    def array(self, depth: int) -> int:
        if depth >= MAX_ARRAY_DEPTH:
            raise _Malformed("metadata arrays nested too deeply")
        etype = self.unpack("<I")
        length = self.unpack("<Q")
        if etype == _STRING:
            # Each string needs at least its 8-byte length: reject a lying count up front.
            if length * 8 > self.size - self.pos:
                raise _Malformed(f"string array of {length} items runs past end of file")
            for _ in range(length):
                value = self.string()
                if value in self.probe:
                    self.found.add(value.decode("utf-8"))
        elif etype == _ARRAY:
            if length * 12 > self.size - self.pos:
                raise _Malformed(f"array of {length} arrays runs past end of file")
            for _ in range(length):
                self.array(depth + 1)
        elif etype in _FIXED:
            self.skip(length * struct.calcsize(_FIXED[etype]))
        else:
            raise _Malformed(f"unknown array element type {etype}")
        return length

    def alignment(self, metadata: dict[str, Scalar]) -> int:
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise _Malformed(f"general.alignment {alignment!r} is not a positive power of two")
        return alignment

    def tensors(self, count: int, alignment: int) -> None:
        infos: list[tuple[str, int, int | None]] = []
        for _ in range(count):
            name = self.string().decode("utf-8", errors="replace")
            n_dims = self.unpack("<I")
            if n_dims > MAX_DIMS:
                raise _Malformed(f"tensor {name!r} has {n_dims} dimensions")
            elements = 1
            for _ in range(n_dims):
                elements *= self.unpack("<Q")
            ggml_type = self.unpack("<I")
            offset = self.unpack("<Q")
            infos.append((name, offset, _nbytes(ggml_type, elements, name)))
        data_start = -(-self.pos // alignment) * alignment
        for name, offset, nbytes in infos:
            if offset % alignment:
                raise _Malformed(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
            end = data_start + offset + (nbytes or 0)
            if end > self.size:
                raise _Malformed(
                    f"tensor {name!r} data ends at {end}, past end of file {self.size}"
                )


def _nbytes(ggml_type: int, elements: int, name: str) -> int | None:
    block = _GGML_BLOCKS.get(ggml_type)
    if block is None:
        return None
    per_block, block_bytes = block
    if elements % per_block:
        raise _Malformed(f"tensor {name!r} has {elements} elements, not a multiple of {per_block}")
    return elements // per_block * block_bytes
