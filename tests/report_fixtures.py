"""Independent PNG decoders for tests/report_test.ts.

Reads JSON from stdin: a list of base64 PNG files (or {"stats": base64} for a screenshot, answered with
{"width", "height", "coloured"} from cv2 alone). Writes JSON to stdout, per file:
  {"width", "height", "channels", "pixels": [row-major interleaved bytes] (pure zlib + struct reader),
   "cv2": [the same from cv2.imdecode, converted to RGB], "chunks": [chunk types in order], "error": str|null}

The pure reader parses the chunk structure, checks every CRC with zlib.crc32, inflates the concatenated IDAT
data as a zlib stream and undoes all five PNG filter types (RFC 2083 / PNG spec section 9), so it checks the
encoder's output format independently of OpenCV.
"""
import base64
import json
import struct
import sys
import zlib

import cv2
import numpy as np


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("bad signature")
    pos, chunks, idat, ihdr = 8, [], b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {ctype!r}")
        chunks.append(ctype.decode("ascii"))
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
        if ctype == b"IEND":
            break
    if pos != len(data):
        raise ValueError("bytes after IEND")
    width, height, depth, ctype, comp, filt, interlace = ihdr
    if depth != 8 or comp != 0 or filt != 0 or interlace != 0 or ctype not in (0, 2):
        raise ValueError(f"unsupported IHDR {ihdr}")
    ch = 1 if ctype == 0 else 3
    raw = zlib.decompress(idat)  # a zlib stream (header + adler32), as PNG requires
    stride = width * ch
    if len(raw) != (stride + 1) * height:
        raise ValueError(f"inflated {len(raw)} bytes, expected {(stride + 1) * height}")
    out = bytearray(stride * height)
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            elif f == 4:
                pred = paeth(a, b, c)
            else:
                raise ValueError(f"bad filter type {f} in row {y}")
            line[i] = (line[i] + pred) & 0xFF
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return width, height, ch, list(out), chunks


def main():
    res = []
    for item in json.load(sys.stdin):
        if isinstance(item, dict):
            # {"stats": b64}: a large screenshot, read with cv2 only (any colour type): size and the number of
            # clearly coloured pixels (max - min channel > 40).
            img = cv2.imdecode(np.frombuffer(base64.b64decode(item["stats"]), np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                res.append({"error": "cv2.imdecode failed"})
                continue
            spread = img.max(axis=2).astype(int) - img.min(axis=2).astype(int)
            res.append({"width": img.shape[1], "height": img.shape[0], "coloured": int((spread > 40).sum()),
                        "error": None})
            continue
        data = base64.b64decode(item)
        try:
            w, h, ch, pixels, chunks = read_png(data)
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ValueError("cv2.imdecode failed")
            if img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            res.append({"width": w, "height": h, "channels": ch, "pixels": pixels,
                        "cv2": img.reshape(-1).tolist(), "chunks": chunks, "error": None})
        except Exception as e:  # reported to the test, which fails naming the file
            res.append({"error": str(e)})
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
