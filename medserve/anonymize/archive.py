"""The output ZIP: one anonymised PDF, Deflate at the configured level.

Written by hand (a single-entry ZIP is a few headers) so the Deflate can come from zlib-ng, which
produces the same format as zlib about twice as fast; any unzip reads it.
"""

from __future__ import annotations

import struct
from datetime import datetime

from zlib_ng import zlib_ng

_DEFLATE = 8
_STORED = 0
_VERSION = 20  # 2.0: Deflate


def _dos_time(moment: datetime) -> tuple[int, int]:
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return time, date


def zip_single(name: str, data: bytes, level: int, modified: datetime) -> bytes:
    """A ZIP archive holding `data` as `name` (Deflate at `level`, or stored when level is 0)."""
    if len(data) >= 0xFFFFFFFF:
        raise ValueError("entry too large for a ZIP without ZIP64")
    crc = zlib_ng.crc32(data)
    if level > 0:
        compressor = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15)  # raw Deflate stream
        payload = compressor.compress(data) + compressor.flush()
        method = _DEFLATE
    else:
        payload, method = data, _STORED
    filename = name.encode("utf-8")
    dos_time, dos_date = _dos_time(modified)
    flags = 0x800  # names are UTF-8
    common = struct.pack(
        "<HHHHHIII",
        _VERSION,
        flags,
        method,
        dos_time,
        dos_date,
        crc,
        len(payload),
        len(data),
    )
    local = b"PK\x03\x04" + common + struct.pack("<HH", len(filename), 0) + filename
    central = (
        b"PK\x01\x02"
        + struct.pack("<H", _VERSION)
        + common
        + struct.pack("<HHHHHII", len(filename), 0, 0, 0, 0, 0, 0)
        + filename
    )
    end = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(payload), 0
    )
    return local + payload + central + end
