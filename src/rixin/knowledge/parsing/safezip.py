"""Zip-bomb checks for Office files (RELIABILITY B3), run before any library opens the archive.

The declared sizes in a zip's central directory are only claims: every member is inflated here
through a counting reader that stops at the caps, so a lying directory cannot make the library
inflate more than we checked. XML parts carrying a DOCTYPE are refused (OOXML never has one; it is
how external entities and entity expansion get in, RELIABILITY B4).
"""

from __future__ import annotations

import struct
import zipfile
from typing import BinaryIO

from rixin.knowledge.parsing.errors import ParseError
from rixin.knowledge.parsing.limits import MiB, ParseLimits

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh", b"\xfd7zXZ")
_ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz", ".tar", ".jar")
# Office files embed documents (a chart's workbook) as opaque blobs: allowed, never opened.
_EMBEDDINGS = ("word/embeddings/", "ppt/embeddings/", "xl/embeddings/")
_XML_SUFFIXES = (".xml", ".rels", ".vml")
_CHUNK = 64 * 1024


def declared_entry_count(f: BinaryIO) -> int:
    """The entry count from the end-of-central-directory record, read before ``zipfile`` builds
    one object per entry (a hostile directory could list millions)."""
    size = f.seek(0, 2)
    tail_len = min(size, 65536 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        raise ParseError("corrupt", "zip end-of-central-directory record not found")
    count: int = struct.unpack_from("<H", tail, at + 10)[0]
    loc = at - 20
    if loc >= 0 and tail[loc : loc + 4] == _ZIP64_LOCATOR:
        eocd64_at: int = struct.unpack_from("<Q", tail, loc + 8)[0]
        if eocd64_at + 56 > size:
            raise ParseError("corrupt", "zip64 end-of-central-directory record out of range")
        f.seek(eocd64_at)
        rec = f.read(56)
        if rec[:4] != _ZIP64_EOCD:
            raise ParseError("corrupt", "zip64 end-of-central-directory record not found")
        count = struct.unpack_from("<Q", rec, 32)[0]
    f.seek(0)
    return count


def check_office_zip(f: BinaryIO, limits: ParseLimits) -> frozenset[str]:
    """Check and fully inflate every member under the limits; return the member names."""
    count = declared_entry_count(f)
    if count > limits.zip_max_entries:
        raise ParseError("too_large", f"zip has {count} entries (limit {limits.zip_max_entries})")
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            _check_directory(infos, limits)
            inflated = 0
            for info in infos:
                inflated += _inflate(zf, info, limits.zip_max_total_bytes - inflated)
            return frozenset(i.filename for i in infos)
    except ParseError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        raise ParseError("corrupt", f"damaged zip archive: {exc}") from exc
    except NotImplementedError as exc:
        raise ParseError("unsupported_file_type", f"unsupported zip feature: {exc}") from exc


def _check_directory(infos: list[zipfile.ZipInfo], limits: ParseLimits) -> None:
    if len(infos) > limits.zip_max_entries:
        raise ParseError("too_large", f"zip has {len(infos)} entries")
    declared = sum(i.file_size for i in infos)
    if declared > limits.zip_max_total_bytes:
        raise ParseError(
            "too_large",
            f"zip declares {declared} uncompressed bytes (limit {limits.zip_max_total_bytes})",
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise ParseError("encrypted", "zip member is encrypted")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MiB and ratio > limits.zip_max_ratio:
            raise ParseError("too_large", f"zip member compression ratio {ratio:.0f} too high")
        name = info.filename.lower()
        if name.endswith(_ARCHIVE_SUFFIXES) and not name.startswith(_EMBEDDINGS):
            raise ParseError("unsupported_file_type", "nested archive inside the document")


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> int:
    """Inflate one member through a counting reader; never more than ``budget`` bytes."""
    name = info.filename.lower()
    is_xml = name.endswith(_XML_SUFFIXES)
    nested_ok = name.startswith(_EMBEDDINGS)
    total = 0
    tail = b""
    with zf.open(info) as member:
        while chunk := member.read(min(_CHUNK, budget - total + 1)):
            if total == 0 and not nested_ok and chunk.startswith(_ARCHIVE_MAGIC):
                raise ParseError("unsupported_file_type", "nested archive inside the document")
            total += len(chunk)
            if total > budget:
                raise ParseError("too_large", "zip inflates beyond the size limit")
            if is_xml:
                window = tail + chunk
                if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
                    raise ParseError("corrupt", f"XML part {info.filename!r} has a DOCTYPE")
                tail = window[-16:]
    if total != info.file_size:
        raise ParseError("corrupt", "zip member size differs from its directory entry")
    return total
