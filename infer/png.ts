/**
 * @file A small PNG encoder (8-bit grayscale or RGB, no alpha, no interlace) for the report pages. The image
 * data is compressed with the web-standard `CompressionStream("deflate")`, which writes exactly the zlib stream
 * (RFC 1950) that the PNG IDAT chunk holds.
 */

const SIGNATURE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let crcTable: Uint32Array | null = null;

/** CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as PNG chunks use it; `crc32("123456789") = 0xCBF43926`. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

async function zlibDeflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(body, 8);
  // The CRC covers the type and the data, not the length.
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

/**
 * Encodes 8-bit pixels, row-major and interleaved (`channels` 1: gray, 3: R, G, B), as a PNG file. Every row
 * uses filter type 1 (Sub), which suits smooth CT images better than no filter at no real cost.
 */
export async function encodePng(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3,
): Promise<Uint8Array> {
  if (!(pixels instanceof Uint8Array)) throw new Error("encodePng: pixels must be a Uint8Array");
  if (channels !== 1 && channels !== 3) {
    throw new Error(`encodePng: channels must be 1 or 3, got ${channels}`);
  }
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 0x7fffffff) {
      throw new Error(`encodePng: ${name} must be a positive integer, got ${v}`);
    }
  }
  const rowBytes = width * channels;
  if (pixels.length !== rowBytes * height) {
    throw new Error(
      `encodePng: ${pixels.length} bytes do not fill ${width}x${height}x${channels} (${rowBytes * height})`,
    );
  }
  const raw = new Uint8Array((rowBytes + 1) * height);
  for (let y = 0; y < height; y++) {
    const src = y * rowBytes, dst = y * (rowBytes + 1);
    raw[dst] = 1;
    for (let i = 0; i < rowBytes; i++) {
      raw[dst + 1 + i] = (pixels[src + i] - (i >= channels ? pixels[src + i - channels] : 0)) & 0xff;
    }
  }
  const ihdr = new Uint8Array(13);
  const hv = new DataView(ihdr.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 1 ? 0 : 2; // colour type: grayscale / truecolour
  // ihdr[10..12]: deflate compression, adaptive filtering, no interlace (all 0)
  const parts = [
    SIGNATURE,
    chunk("IHDR", ihdr),
    chunk("IDAT", await zlibDeflate(raw)),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** `encodePng` as a `data:image/png;base64,...` URI for an `<img src>`. */
export async function pngDataUri(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3,
): Promise<string> {
  const png = await encodePng(pixels, width, height, channels);
  let bin = "";
  for (let i = 0; i < png.length; i += 0x8000) {
    bin += String.fromCharCode(...png.subarray(i, i + 0x8000));
  }
  return `data:image/png;base64,${btoa(bin)}`;
}
