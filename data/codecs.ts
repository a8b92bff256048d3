/**
 * @file Pixel-data codecs for the transfer syntaxes of CT series: native little/big endian (implicit,
 * explicit, deflated), JPEG Lossless (process 14, .4.57 / .4.70, pure JS), JPEG-LS (.4.80 / .4.81, CharLS
 * wasm), JPEG 2000 (.4.90 / .4.91, OpenJPEG wasm) and RLE Lossless (.5, implemented here). Decoders return the
 * raw samples; the caller masks them to BitsStored and sign-extends (compressed streams do not reliably
 * carry DICOM signedness).
 */
import { Decoder as JpegLosslessDecoder } from "jpeg-lossless-decoder-js";
import CharLSWASM from "@cornerstonejs/codec-charls/decodewasmjs";
import OpenJPEGWASM from "@cornerstonejs/codec-openjpeg/decodewasmjs";

/** Transfer syntaxes this module can decode, by UID. */
export const TRANSFER_SYNTAXES: Record<string, string> = {
  "1.2.840.10008.1.2": "Implicit VR Little Endian",
  "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
  "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
  "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
  "1.2.840.10008.1.2.4.57": "JPEG Lossless (process 14)",
  "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
  "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
  "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
  "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
  "1.2.840.10008.1.2.4.91": "JPEG 2000",
  "1.2.840.10008.1.2.5": "RLE Lossless",
};

/** Whether pixel data of this syntax is encapsulated (compressed fragments). */
export function isEncapsulated(ts: string): boolean {
  return ts.startsWith("1.2.840.10008.1.2.4.") || ts === "1.2.840.10008.1.2.5";
}

// deno-lint-ignore no-explicit-any
let charls: any = null;
// deno-lint-ignore no-explicit-any
let openjpeg: any = null;

// Why the wasm codecs could not load (in a browser, the bundle fetches their .wasm beside the page, which
// web/serve.ts serves; another server may not): only JPEG-LS and JPEG 2000 series need them, so the other
// syntaxes still decode and those two report this.
let codecError = "";

/** Loads the wasm codecs (once per process); a failure is reported when a JPEG-LS/2000 frame needs them. */
export async function initCodecs(): Promise<void> {
  try {
    if (!charls) charls = await CharLSWASM();
    if (!openjpeg) openjpeg = await OpenJPEGWASM({ print() {}, printErr() {} });
  } catch (e) {
    codecError = `the wasm codecs could not be loaded here (${(e as Error)?.message ?? e})`;
  }
}

// deno-lint-ignore no-explicit-any
function wasmDecode(mod: any, cls: string, bytes: Uint8Array): Uint8Array {
  const d = new mod[cls]();
  try {
    d.getEncodedBuffer(bytes.length).set(bytes);
    d.decode();
    return new Uint8Array(d.getDecodedBuffer()).slice();
  } finally {
    d.delete();
  }
}

/** RLE Lossless (PS3.5 annex G): a 64-byte header of segment offsets, each segment PackBits of one byte plane. */
export function decodeRle(frame: Uint8Array, rows: number, cols: number, bitsAllocated: number): Uint8Array {
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const nseg = dv.getUint32(0, true);
  const bytesPer = bitsAllocated / 8;
  if (nseg !== bytesPer) throw new Error(`RLE: ${nseg} segments for ${bitsAllocated}-bit samples`);
  const n = rows * cols;
  const out = new Uint8Array(n * bytesPer);
  for (let s = 0; s < nseg; s++) {
    const start = dv.getUint32(4 + 4 * s, true);
    const end = s + 1 < nseg ? dv.getUint32(8 + 4 * s, true) : frame.length;
    // Segment 0 holds the most significant bytes; little-endian output puts them last.
    const byteIdx = bytesPer - 1 - s;
    let p = start, o = 0;
    while (o < n && p < end) {
      const h = (frame[p++] << 24) >> 24;
      if (h >= 0) {
        for (let k = 0; k <= h && o < n; k++) out[(o++) * bytesPer + byteIdx] = frame[p++];
      } else if (h !== -128) {
        const v = frame[p++];
        for (let k = 0; k < 1 - h && o < n; k++) out[(o++) * bytesPer + byteIdx] = v;
      }
    }
    if (o < n) throw new Error(`RLE: segment ${s} ends after ${o} of ${n} samples`);
  }
  return out;
}

/**
 * Decodes one frame to little-endian sample bytes (bitsAllocated / 8 bytes per sample).
 * Throws with the syntax name on a codec failure.
 */
export function decodeFrame(
  ts: string,
  frame: Uint8Array,
  rows: number,
  cols: number,
  bitsAllocated: number,
): Uint8Array {
  switch (ts) {
    case "1.2.840.10008.1.2.4.57":
    case "1.2.840.10008.1.2.4.70": {
      const dec = new JpegLosslessDecoder();
      const buf = frame.slice().buffer as ArrayBuffer;
      const out = dec.decode(buf, 0, frame.byteLength, bitsAllocated > 8 ? 2 : 1);
      return new Uint8Array(out.buffer, out.byteOffset, rows * cols * (bitsAllocated / 8)).slice();
    }
    case "1.2.840.10008.1.2.4.80":
    case "1.2.840.10008.1.2.4.81":
      if (!charls) throw new Error(`JPEG-LS codec not available: ${codecError || "call initCodecs"}`);
      return wasmDecode(charls, "JpegLSDecoder", frame);
    case "1.2.840.10008.1.2.4.90":
    case "1.2.840.10008.1.2.4.91":
      if (!openjpeg) throw new Error(`JPEG 2000 codec not available: ${codecError || "call initCodecs"}`);
      return wasmDecode(openjpeg, "J2KDecoder", frame);
    case "1.2.840.10008.1.2.5":
      return decodeRle(frame, rows, cols, bitsAllocated);
    default:
      throw new Error(`unsupported transfer syntax ${ts}`);
  }
}
