/**
 * @file Raw DEFLATE decompression (RFC 1951) for ZIP entries stored with method 8. Written here rather than
 * taken from `node:zlib` so that the engine's checkpoint reader runs where only web APIs exist (browsers,
 * Workers without permissions), and synchronously, as `readPth` is. Huffman codes are decoded through one
 * lookup table per code, indexed by the next (bit-reversed) input bits.
 */

const LEN_BASE = [
  3,
  4,
  5,
  6,
  7,
  8,
  9,
  10,
  11,
  13,
  15,
  17,
  19,
  23,
  27,
  31,
  35,
  43,
  51,
  59,
  67,
  83,
  99,
  115,
  131,
  163,
  195,
  227,
  258,
];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [
  1,
  2,
  3,
  4,
  5,
  7,
  9,
  13,
  17,
  25,
  33,
  49,
  65,
  97,
  129,
  193,
  257,
  385,
  513,
  769,
  1025,
  1537,
  2049,
  3073,
  4097,
  6145,
  8193,
  12289,
  16385,
  24577,
];
const DIST_EXTRA = [
  0,
  0,
  0,
  0,
  1,
  1,
  2,
  2,
  3,
  3,
  4,
  4,
  5,
  5,
  6,
  6,
  7,
  7,
  8,
  8,
  9,
  9,
  10,
  10,
  11,
  11,
  12,
  12,
  13,
  13,
];
/** Order in which the code-length code's lengths are sent. */
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/** A Huffman decoding table: entry = symbol << 4 | code length, -1 where no code maps. */
interface Table {
  entries: Int32Array;
  bits: number;
}

function buildTable(lens: ArrayLike<number>, what: string, kind: string): Table {
  const count = new Int32Array(16);
  let max = 0;
  for (let i = 0; i < lens.length; i++) {
    count[lens[i]]++;
    if (lens[i] > max) max = lens[i];
  }
  count[0] = 0;
  let left = 1;
  for (let len = 1; len < 16; len++) {
    left = (left << 1) - count[len];
    if (left < 0) throw new Error(`${what}: corrupt deflate data (over-subscribed ${kind} code)`);
  }
  // Incomplete codes are allowed (a lone distance code is common); their unused entries stay -1.
  const next = new Int32Array(16);
  for (let len = 1, code = 0; len < 16; len++) {
    code = (code + count[len - 1]) << 1;
    next[len] = code;
  }
  const size = 1 << max;
  const entries = new Int32Array(size).fill(-1);
  for (let sym = 0; sym < lens.length; sym++) {
    const len = lens[sym];
    if (!len) continue;
    let code = next[len]++, rev = 0;
    for (let b = 0; b < len; b++) (rev = (rev << 1) | (code & 1)), (code >>= 1);
    for (let k = rev; k < size; k += 1 << len) entries[k] = (sym << 4) | len;
  }
  return { entries, bits: max };
}

let fixed: [Table, Table] | null = null;
function fixedTables(): [Table, Table] {
  if (!fixed) {
    const lit = new Uint8Array(288);
    lit.fill(8, 0, 144).fill(9, 144, 256).fill(7, 256, 280).fill(8, 280, 288);
    fixed = [
      buildTable(lit, "fixed", "literal"),
      buildTable(new Uint8Array(30).fill(5), "fixed", "distance"),
    ];
  }
  return fixed;
}

/**
 * Decompresses a raw DEFLATE stream (no zlib/gzip header). `sizeHint` (the expected output size, when the
 * container records it) sizes the output buffer; errors name `what`.
 */
export function inflateRaw(src: Uint8Array, sizeHint = 0, what = "deflate stream"): Uint8Array {
  let out = new Uint8Array(Math.max(sizeHint, 1024));
  let op = 0;
  let pos = 0, bitBuf = 0, bitCnt = 0;
  const fail = (msg: string): never => {
    throw new Error(`${what}: corrupt deflate data (${msg})`);
  };
  // Reads past the end are padded with zeros so a table lookup may peek; consuming them is an error.
  const fill = (n: number) => {
    while (bitCnt < n) {
      bitBuf |= (pos < src.length ? src[pos] : 0) << bitCnt;
      pos++;
      bitCnt += 8;
    }
  };
  const consume = (n: number) => {
    bitBuf >>>= n;
    bitCnt -= n;
    if (pos * 8 - bitCnt > src.length * 8) fail("truncated");
  };
  const bits = (n: number): number => {
    if (n === 0) return 0;
    fill(n);
    const v = bitBuf & ((1 << n) - 1);
    consume(n);
    return v;
  };
  const decode = (t: Table): number => {
    fill(t.bits);
    const e = t.entries[bitBuf & ((1 << t.bits) - 1)];
    if (e < 0) fail("invalid Huffman code");
    consume(e & 15);
    return e >> 4;
  };
  const reserve = (n: number) => {
    if (op + n <= out.length) return;
    const grown = new Uint8Array(Math.max(op + n, out.length * 2));
    grown.set(out.subarray(0, op));
    out = grown;
  };

  let last = 0;
  while (!last) {
    last = bits(1);
    const type = bits(2);
    if (type === 0) {
      // Stored: skip to the byte boundary, then LEN and its one's complement.
      consume(bitCnt & 7);
      pos -= bitCnt >> 3;
      bitBuf = 0;
      bitCnt = 0;
      if (pos + 4 > src.length) fail("truncated");
      const len = src[pos] | (src[pos + 1] << 8), nlen = src[pos + 2] | (src[pos + 3] << 8);
      if ((len ^ 0xffff) !== nlen) fail("stored block length check");
      pos += 4;
      if (pos + len > src.length) fail("truncated");
      reserve(len);
      out.set(src.subarray(pos, pos + len), op);
      op += len;
      pos += len;
      continue;
    }
    let lit: Table, dist: Table;
    if (type === 1) {
      [lit, dist] = fixedTables();
    } else if (type === 2) {
      const nlit = bits(5) + 257, ndist = bits(5) + 1, ncl = bits(4) + 4;
      if (nlit > 286 || ndist > 30) fail("too many length or distance codes");
      const clLens = new Uint8Array(19);
      for (let i = 0; i < ncl; i++) clLens[CL_ORDER[i]] = bits(3);
      const cl = buildTable(clLens, what, "code-length");
      const lens = new Uint8Array(nlit + ndist);
      for (let i = 0; i < lens.length;) {
        const sym = decode(cl);
        if (sym < 16) {
          lens[i++] = sym;
          continue;
        }
        let rep = 0, val = 0;
        if (sym === 16) {
          if (i === 0) fail("length repeat with no previous length");
          val = lens[i - 1];
          rep = 3 + bits(2);
        } else if (sym === 17) {
          rep = 3 + bits(3);
        } else {
          rep = 11 + bits(7);
        }
        if (i + rep > lens.length) fail("code lengths overflow");
        lens.fill(val, i, i + rep);
        i += rep;
      }
      if (!lens[256]) fail("no end-of-block code");
      lit = buildTable(lens.subarray(0, nlit), what, "literal/length");
      dist = buildTable(lens.subarray(nlit), what, "distance");
    } else {
      return fail("invalid block type 3");
    }
    for (;;) {
      const sym = decode(lit);
      if (sym < 256) {
        reserve(1);
        out[op++] = sym;
        continue;
      }
      if (sym === 256) break;
      const li = sym - 257;
      if (li >= 29) fail(`invalid length symbol ${sym}`);
      const len = LEN_BASE[li] + bits(LEN_EXTRA[li]);
      const di = decode(dist);
      if (di >= 30) fail(`invalid distance symbol ${di}`);
      const d = DIST_BASE[di] + bits(DIST_EXTRA[di]);
      if (d > op) fail(`distance ${d} reaches before the start of the output`);
      reserve(len);
      for (let k = 0; k < len; k++, op++) out[op] = out[op - d];
    }
  }
  return out.length === op ? out : out.slice(0, op);
}
