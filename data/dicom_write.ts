/**
 * @file A minimal DICOM Part 10 writer for CT slices (Explicit VR Little Endian, or JPEG Lossless SV1 with
 * our own encoder), used by the synthetic phantom generator. Its output is read by dcmtk, GDCM and pydicom.
 */

/** What one CT slice file holds. */
export interface CtSliceSpec {
  studyUid: string;
  seriesUid: string;
  sopUid: string;
  patientId: string;
  instanceNumber: number;
  position: [number, number, number];
  orientation: [number, number, number, number, number, number];
  pixelSpacing: [number, number];
  sliceThickness: number;
  rows: number;
  cols: number;
  /** Stored values (signed 16-bit). */
  pixels: Int16Array;
  rescaleIntercept: number;
  rescaleSlope: number;
  /** Compress with JPEG Lossless SV1 (1.2.840.10008.1.2.4.70). */
  jpegLossless?: boolean;
}

const CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE = "1.2.840.10008.1.2.1";
const JPEG_LL_SV1 = "1.2.840.10008.1.2.4.70";
const IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1378.1";

class Writer {
  chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array) {
    this.chunks.push(b);
    this.length += b.length;
  }
  u16(v: number) {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, true);
    this.push(b);
  }
  u32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let p = 0;
    for (const c of this.chunks) {
      out.set(c, p);
      p += c.length;
    }
    return out;
  }
}

const LONG_VR = new Set(["OB", "OW", "OF", "SQ", "UT", "UN"]);

function element(
  w: Writer,
  group: number,
  elem: number,
  vr: string,
  value: Uint8Array,
  undefinedLength = false,
) {
  w.u16(group);
  w.u16(elem);
  w.push(new TextEncoder().encode(vr));
  if (LONG_VR.has(vr)) {
    w.u16(0);
    w.u32(undefinedLength ? 0xffffffff : value.length);
  } else w.u16(value.length);
  w.push(value);
}

function str(s: string, vr: string): Uint8Array {
  let b = new TextEncoder().encode(s);
  if (b.length % 2) {
    const p = new Uint8Array(b.length + 1);
    p.set(b);
    p[b.length] = vr === "UI" ? 0 : 0x20;
    b = p;
  }
  return b;
}

function us(v: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v, true);
  return b;
}

/** Decimal string of a number, at most 16 characters (DS). */
function ds(v: number): string {
  let s = String(Math.round(v * 1e6) / 1e6);
  if (s.length > 16) s = v.toPrecision(10);
  return s;
}

/** JPEG Lossless SV1 (predictor 1) of 16-bit samples, with a fixed valid Huffman table. */
export function encodeJpegLossless(pixels: Uint16Array | Int16Array, rows: number, cols: number): Uint8Array {
  // Code lengths per category (0..16): 3 bits for 0-5, then 4..12, and 13 for 15 and 16 (Kraft sum 0.875).
  const lengths = [3, 3, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 13];
  const bitsCount = new Array(17).fill(0);
  for (const l of lengths) bitsCount[l]++;
  const order = lengths.map((l, s) => [l, s]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const codes = new Array(17).fill(0);
  let code = 0, prevLen = order[0][0];
  for (const [l, s] of order) {
    code <<= l - prevLen;
    prevLen = l;
    codes[s] = code++;
  }
  const out: number[] = [];
  const marker = (m: number, payload: number[]) =>
    out.push(0xff, m, ((payload.length + 2) >> 8) & 255, (payload.length + 2) & 255, ...payload);
  out.push(0xff, 0xd8);
  marker(0xc3, [16, rows >> 8, rows & 255, cols >> 8, cols & 255, 1, 1, 0x11, 0]);
  marker(0xc4, [0x00, ...bitsCount.slice(1), ...order.map(([, s]) => s)]);
  marker(0xda, [1, 1, 0x00, 1, 0, 0]);
  let acc = 0, nbits = 0;
  const put = (v: number, n: number) => {
    for (let i = n - 1; i >= 0; i--) {
      acc = (acc << 1) | ((v >> i) & 1);
      if (++nbits === 8) {
        out.push(acc);
        if (acc === 0xff) out.push(0);
        acc = 0;
        nbits = 0;
      }
    }
  };
  const px = (i: number) => pixels[i] & 0xffff;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const i = y * cols + x;
      const pred = x === 0 && y === 0 ? 32768 : y === 0 ? px(i - 1) : x === 0 ? px(i - cols) : px(i - 1);
      let d = (px(i) - pred) & 0xffff;
      if (d >= 32768) d -= 65536;
      const mag = Math.abs(d);
      const cat = d === -32768 ? 16 : mag === 0 ? 0 : 32 - Math.clz32(mag);
      put(codes[cat], lengths[cat]);
      if (cat > 0 && cat < 16) put(d > 0 ? d : d + (1 << cat) - 1, cat);
    }
  }
  if (nbits > 0) put((1 << (8 - nbits)) - 1, 8 - nbits);
  out.push(0xff, 0xd9);
  return new Uint8Array(out);
}

/** Serialises one CT slice as a DICOM Part 10 file. */
export function writeCtSlice(s: CtSliceSpec): Uint8Array {
  const ts = s.jpegLossless ? JPEG_LL_SV1 : EXPLICIT_LE;
  const meta = new Writer();
  element(meta, 2, 1, "OB", new Uint8Array([0, 1]));
  element(meta, 2, 2, "UI", str(CT_IMAGE_STORAGE, "UI"));
  element(meta, 2, 3, "UI", str(s.sopUid, "UI"));
  element(meta, 2, 0x10, "UI", str(ts, "UI"));
  element(meta, 2, 0x12, "UI", str(IMPLEMENTATION_UID, "UI"));
  const metaBytes = meta.bytes();
  const w = new Writer();
  w.push(new Uint8Array(128));
  w.push(new TextEncoder().encode("DICM"));
  const gl = new Uint8Array(4);
  new DataView(gl.buffer).setUint32(0, metaBytes.length, true);
  element(w, 2, 0, "UL", gl);
  w.push(metaBytes);
  const e = (g: number, el: number, vr: string, v: string) => element(w, g, el, vr, str(v, vr));
  e(8, 0x16, "UI", CT_IMAGE_STORAGE);
  e(8, 0x18, "UI", s.sopUid);
  e(8, 0x60, "CS", "CT");
  e(0x10, 0x10, "PN", "Phantom");
  e(0x10, 0x20, "LO", s.patientId);
  e(0x18, 0x50, "DS", ds(s.sliceThickness));
  e(0x20, 0x0d, "UI", s.studyUid);
  e(0x20, 0x0e, "UI", s.seriesUid);
  e(0x20, 0x13, "IS", String(s.instanceNumber));
  e(0x20, 0x32, "DS", s.position.map(ds).join("\\"));
  e(0x20, 0x37, "DS", s.orientation.map(ds).join("\\"));
  element(w, 0x28, 0x02, "US", us(1));
  e(0x28, 0x04, "CS", "MONOCHROME2");
  element(w, 0x28, 0x10, "US", us(s.rows));
  element(w, 0x28, 0x11, "US", us(s.cols));
  e(0x28, 0x30, "DS", s.pixelSpacing.map(ds).join("\\"));
  element(w, 0x28, 0x100, "US", us(16));
  element(w, 0x28, 0x101, "US", us(16));
  element(w, 0x28, 0x102, "US", us(15));
  element(w, 0x28, 0x103, "US", us(1));
  e(0x28, 0x1052, "DS", ds(s.rescaleIntercept));
  e(0x28, 0x1053, "DS", ds(s.rescaleSlope));
  if (s.jpegLossless) {
    let frame = encodeJpegLossless(s.pixels, s.rows, s.cols);
    if (frame.length % 2) {
      const p = new Uint8Array(frame.length + 1);
      p.set(frame);
      frame = p;
    }
    w.u16(0x7fe0);
    w.u16(0x10);
    w.push(new TextEncoder().encode("OB"));
    w.u16(0);
    w.u32(0xffffffff);
    const item = (data: Uint8Array) => {
      w.u16(0xfffe);
      w.u16(0xe000);
      w.u32(data.length);
      w.push(data);
    };
    item(new Uint8Array(0)); // empty basic offset table
    item(frame);
    w.u16(0xfffe);
    w.u16(0xe0dd);
    w.u32(0);
  } else {
    element(w, 0x7fe0, 0x10, "OW", new Uint8Array(s.pixels.buffer, s.pixels.byteOffset, s.pixels.byteLength));
  }
  return w.bytes();
}
