"""A tiny, bounded pre-compile scan of a wasm binary's section headers and function bodies.

Compiling with Cranelift cannot be interrupted, so a module built to be expensive to compile (tens of
thousands of functions, huge bodies, a million locals) would stall the validator at registration.
This scan reads only counts and sizes, in linear time, and lets the validator refuse such modules
before any compilation starts. Full validation is left to wasmtime.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\0asm"
VERSION_1 = b"\x01\0\0\0"


class ScanError(ValueError):
    """The bytes are not a well-formed core wasm module at the level this scan reads."""


@dataclass(frozen=True)
class ScanResult:
    imported_functions: int
    defined_functions: int
    max_body_bytes: int
    max_locals: int
    section_ids: tuple[int, ...]


def _uleb(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= limit:
            raise ScanError("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 35:
            raise ScanError("LEB128 too long")


def _skip_sleb(data: bytes, pos: int, limit: int) -> int:
    for _ in range(6):
        if pos >= limit:
            raise ScanError("truncated LEB128")
        b = data[pos]
        pos += 1
        if not b & 0x80:
            return pos
    raise ScanError("LEB128 too long")


def scan(data: bytes) -> ScanResult:
    """Read section ids, the import/function counts and, per body, size and declared locals."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ScanError("not a wasm module (bad magic)")
    if data[4:8] != VERSION_1:
        raise ScanError(f"unsupported wasm binary version {data[4:8].hex()} (components are not accepted)")
    pos, end = 8, len(data)
    imported = defined = max_body = max_locals = 0
    ids: list[int] = []
    while pos < end:
        sid = data[pos]
        size, pos = _uleb(data, pos + 1, end)
        sec_end = pos + size
        if sec_end > end:
            raise ScanError(f"section {sid} runs past the end of the module")
        ids.append(sid)
        if sid == 2:  # imports: count function imports
            n, p = _uleb(data, pos, sec_end)
            for _ in range(n):
                for _field in range(2):  # module name, field name
                    ln, p = _uleb(data, p, sec_end)
                    p += ln
                if p >= sec_end:
                    raise ScanError("truncated import")
                kind = data[p]
                p += 1
                if kind == 0:
                    imported += 1
                    _, p = _uleb(data, p, sec_end)
                else:
                    break  # non-function import: refused later by name anyway; stop reading here
        elif sid == 3:
            defined, _ = _uleb(data, pos, sec_end)
        elif sid == 10:
            n, p = _uleb(data, pos, sec_end)
            for _ in range(n):
                body_len, p = _uleb(data, p, sec_end)
                body_end = p + body_len
                if body_end > sec_end:
                    raise ScanError("function body runs past the code section")
                max_body = max(max_body, body_len)
                groups, q = _uleb(data, p, body_end)
                locals_total = 0
                for _g in range(groups):
                    count, q = _uleb(data, q, body_end)
                    locals_total += count
                    if q >= body_end:
                        raise ScanError("truncated locals")
                    vt = data[q]
                    q += 1
                    if vt in (0x63, 0x64):  # (ref null? ht): skip the heap type
                        q = _skip_sleb(data, q, body_end)
                max_locals = max(max_locals, locals_total)
                p = body_end
        pos = sec_end
    return ScanResult(imported, defined, max_body, max_locals, tuple(ids))
