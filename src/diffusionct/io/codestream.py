"""Structural checks of a compressed slice's codestream before it is decoded.

Decoders are lenient: OpenJPEG decodes a JPEG 2000 codestream cut short (a file copied in part, a transfer broken
off) into an image with its missing detail left out, and reports nothing. These checks find what the codestream's
own structure tells: its start and end markers, the tile-part lengths it declares, and, in JPEG 2000's coded data,
a marker code where bit stuffing forbids one. A bit flipped inside the coded data leaves a valid codestream; DICOM
records no checksum of the pixel data, so such damage cannot be told from the file.
"""

from __future__ import annotations

import numpy as np
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

# High-throughput JPEG 2000 (HTJ2K) codes its blocks otherwise: only its markers and lengths are checked
CLASSIC_JPEG2000 = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93")
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
SOP, EPH = 0x91, 0x92  # JPEG 2000 markers allowed inside the coded data (packet start, end of packet header)


def codestream_problem(code: bytes, transfer_syntax: str) -> str | None:
    """What is wrong with one frame's codestream (None: nothing the structure shows)."""
    if code.startswith(JP2_SIGNATURE):  # a JP2 file where DICOM asks for the bare codestream (some writers do)
        box = code.find(b"jp2c")
        code = code[box + 4:] if box >= 0 else code
    data = np.frombuffer(code, np.uint8)
    end = len(data)
    while end > 2 and data[end - 1] in (0x00, 0xFF) and not (data[end - 2] == 0xFF and data[end - 1] == 0xD9):
        end -= 1  # fragments are padded to an even length, with a zero or a JPEG fill byte
    if transfer_syntax in JPEG2000TransferSyntaxes:
        return _jpeg2000_problem(data[:end], stuffed=transfer_syntax in CLASSIC_JPEG2000)
    if transfer_syntax in JPEGTransferSyntaxes or transfer_syntax in JPEGLSTransferSyntaxes:
        if end < 4 or data[0] != 0xFF or data[1] != 0xD8:
            return "no start-of-image marker"
        if not (data[end - 2] == 0xFF and data[end - 1] == 0xD9):
            return "no end-of-image marker: the compressed slice is cut short"
    return None


def _jpeg2000_problem(data: np.ndarray, stuffed: bool) -> str | None:
    end = len(data)
    if end < 8 or data[0] != 0xFF or data[1] != 0x4F:
        return "no JPEG 2000 start-of-codestream marker"
    if not (data[end - 2] == 0xFF and data[end - 1] == 0xD9):
        return "no JPEG 2000 end-of-codestream marker: the compressed slice is cut short"
    pos = 2
    while not (data[pos] == 0xFF and data[pos + 1] == 0x90):  # the main header's segments, up to the first tile-part
        if data[pos] != 0xFF or pos + 4 > end - 2:
            return "a damaged JPEG 2000 main header"
        pos += 2 + _u16(data, pos + 2)
        if pos + 2 > end - 2:
            return "a JPEG 2000 codestream without tile-parts"
    while pos < end - 2:
        if pos + 10 > end - 2 or not (data[pos] == 0xFF and data[pos + 1] == 0x90):
            return f"a JPEG 2000 tile-part does not begin where the previous one ends (byte {pos})"
        length = int.from_bytes(data[pos + 6:pos + 10].tobytes(), "big")
        stop = end - 2 if length == 0 else pos + length  # 0: the last tile-part, up to the end marker
        if stop > end - 2 or length and length < 14:
            return "a JPEG 2000 tile-part runs past the end of the data: the compressed slice is cut short"
        body = pos + 2 + _u16(data, pos + 2)
        while body + 1 < stop and not (data[body] == 0xFF and data[body + 1] == 0x93):  # tile-part header, up to SOD
            body += 2 + _u16(data, body + 2)
        if stuffed and _marker_inside(data[body + 2:stop]):
            return "a marker code inside the JPEG 2000 coded data (damaged bytes)"
        pos = stop
    return None


def _u16(data: np.ndarray, at: int) -> int:
    return int(data[at]) << 8 | int(data[at + 1]) if at + 1 < len(data) else 1 << 20


def _marker_inside(coded: np.ndarray) -> bool:
    """Bit stuffing keeps every 0xFF of coded data followed by a byte below 0x90; only SOP and EPH markers may sit there."""
    after = coded[np.flatnonzero(coded[:-1] == 0xFF) + 1]
    return bool(np.any((after > 0x8F) & (after != SOP) & (after != EPH)))
