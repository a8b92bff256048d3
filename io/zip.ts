/**
 * @file A minimal ZIP reader for PyTorch checkpoints (torch.save writes an uncompressed ZIP, sometimes with
 * ZIP64 records): the central directory gives each entry's name and where its data lies.
 */
import { inflateRaw } from "./inflate.ts";

/** One archive member. */
export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

/** The entries of a ZIP archive held in memory, and a reader for their data. */
export class ZipArchive {
  readonly entries = new Map<string, ZipEntry>();
  #dv: DataView;

  constructor(readonly buf: Uint8Array, readonly path: string) {
    this.#dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const dv = this.#dv;
    let eocd = -1;
    for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
      if (dv.getUint32(i, true) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      throw new Error(`${path}: not a ZIP archive or truncated (no end-of-central-directory record)`);
    }
    let count = dv.getUint16(eocd + 10, true);
    let cdOff = dv.getUint32(eocd + 16, true);
    if (cdOff === 0xffffffff || count === 0xffff) {
      // ZIP64: the locator just before the EOCD points at the ZIP64 EOCD record.
      const loc = eocd - 20;
      if (loc < 0 || dv.getUint32(loc, true) !== 0x07064b50) {
        throw new Error(`${path}: corrupt ZIP64 locator`);
      }
      const z = Number(dv.getBigUint64(loc + 8, true));
      if (dv.getUint32(z, true) !== 0x06064b50) throw new Error(`${path}: corrupt ZIP64 end record`);
      count = Number(dv.getBigUint64(z + 32, true));
      cdOff = Number(dv.getBigUint64(z + 48, true));
    }
    let p = cdOff;
    for (let i = 0; i < count; i++) {
      if (p + 46 > buf.length || dv.getUint32(p, true) !== 0x02014b50) {
        throw new Error(`${path}: corrupt central directory`);
      }
      const method = dv.getUint16(p + 10, true);
      let csize = dv.getUint32(p + 20, true), size = dv.getUint32(p + 24, true);
      const nlen = dv.getUint16(p + 28, true),
        xlen = dv.getUint16(p + 30, true),
        clen = dv.getUint16(p + 32, true);
      let local = dv.getUint32(p + 42, true);
      const name = new TextDecoder().decode(buf.subarray(p + 46, p + 46 + nlen));
      // ZIP64 extra field (id 1) holds the 64-bit values that are 0xffffffff above, in order.
      let x = p + 46 + nlen;
      const xend = x + xlen;
      while (x + 4 <= xend) {
        const id = dv.getUint16(x, true), len = dv.getUint16(x + 2, true);
        if (id === 1) {
          let q = x + 4;
          if (size === 0xffffffff) (size = Number(dv.getBigUint64(q, true))), (q += 8);
          if (csize === 0xffffffff) (csize = Number(dv.getBigUint64(q, true))), (q += 8);
          if (local === 0xffffffff) local = Number(dv.getBigUint64(q, true));
        }
        x += 4 + len;
      }
      this.entries.set(name, { name, method, compressedSize: csize, size, localOffset: local });
      p += 46 + nlen + xlen + clen;
    }
  }

  /** The bytes of an entry (a view for stored entries). */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: archive has no entry "${name}"`);
    const dv = this.#dv;
    if (dv.getUint32(e.localOffset, true) !== 0x04034b50) {
      throw new Error(`${this.path}: corrupt local header of "${name}"`);
    }
    const start = e.localOffset + 30 + dv.getUint16(e.localOffset + 26, true) +
      dv.getUint16(e.localOffset + 28, true);
    if (start + e.compressedSize > this.buf.length) {
      throw new Error(`${this.path}: entry "${name}" is truncated`);
    }
    const raw = this.buf.subarray(start, start + e.compressedSize);
    if (e.method === 0) return raw;
    if (e.method === 8) {
      const out = inflateRaw(raw, e.size, `${this.path}: entry "${name}"`);
      if (out.length !== e.size) {
        throw new Error(`${this.path}: entry "${name}" inflates to ${out.length} bytes, expected ${e.size}`);
      }
      return out;
    }
    throw new Error(`${this.path}: entry "${name}" uses unsupported compression method ${e.method}`);
  }
}
