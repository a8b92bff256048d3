/**
 * @file The safetensors format (our training checkpoints): an 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the raw data.
 * Writes are atomic (a temporary file renamed into place).
 */
import { Tensor } from "../core/tensor.ts";
import { halfToFloat, type HostTensor } from "./host.ts";
import { downloadTensors } from "./download.ts";

const DT: Record<string, { ours: HostTensor["dtype"]; bytes: number }> = {
  F32: { ours: "f32", bytes: 4 },
  I32: { ours: "i32", bytes: 4 },
  U8: { ours: "u8", bytes: 1 },
  I64: { ours: "i32", bytes: 8 },
  F16: { ours: "f32", bytes: 2 },
  F64: { ours: "f32", bytes: 8 },
};

/**
 * Serialises tensors and string metadata. Device tensors are read back together with one GPU wait
 * ({@link downloadTensors}); host tensors are written as they are.
 */
export async function encodeSafetensors(
  sd: Record<string, Tensor | HostTensor>,
  meta: Record<string, string> = {},
): Promise<Uint8Array> {
  const entries = Object.entries(sd);
  const onDevice = entries.filter((e): e is [string, Tensor] => e[1] instanceof Tensor);
  const got = await downloadTensors(onDevice.map(([, t]) => t));
  const host = new Map<string, HostTensor>(onDevice.map(([k], i) => [k, got[i]]));
  const header: Record<string, unknown> = { __metadata__: meta };
  const chunks: Uint8Array[] = [];
  let off = 0;
  for (const [k, v] of entries) {
    const h = host.get(k) ?? (v as HostTensor);
    const a = h.data;
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    header[k] = {
      dtype: h.dtype === "f32" ? "F32" : h.dtype === "i32" ? "I32" : "U8",
      shape: [...h.shape],
      data_offsets: [off, off + bytes.length],
    };
    chunks.push(bytes);
    off += bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}

/** Parses a safetensors file into host tensors and its metadata. */
export function decodeSafetensors(
  buf: Uint8Array,
  path = "<buffer>",
): { tensors: Record<string, HostTensor>; meta: Record<string, string> } {
  if (buf.length < 8) throw new Error(`${path}: not a safetensors file (too short)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (n <= 0 || 8 + n > buf.length) {
    throw new Error(`${path}: not a safetensors file or truncated (header length ${n})`);
  }
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  } catch {
    throw new Error(`${path}: corrupt safetensors header`);
  }
  const base = 8 + n;
  const tensors: Record<string, HostTensor> = {};
  let meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") {
      meta = v as unknown as Record<string, string>;
      continue;
    }
    const dt = DT[v.dtype];
    if (!dt) throw new Error(`${path}: tensor "${k}" has unsupported dtype ${v.dtype}`);
    const count = v.shape.reduce((p, d) => p * d, 1);
    const [b0, b1] = v.data_offsets;
    if (b1 - b0 !== count * dt.bytes || base + b1 > buf.length) {
      throw new Error(
        `${path}: tensor "${k}" [${v.shape}] ${v.dtype} has bad offsets [${b0}, ${b1}] (file truncated?)`,
      );
    }
    const raw = buf.slice(base + b0, base + b1);
    const view = new DataView(raw.buffer);
    let data: HostTensor["data"];
    switch (v.dtype) {
      case "F32":
        data = new Float32Array(raw.buffer);
        break;
      case "I32":
        data = new Int32Array(raw.buffer);
        break;
      case "U8":
        data = raw;
        break;
      case "I64":
        data = Int32Array.from({ length: count }, (_, i) => Number(view.getBigInt64(8 * i, true)));
        break;
      case "F16":
        data = Float32Array.from({ length: count }, (_, i) => halfToFloat(view.getUint16(2 * i, true)));
        break;
      default:
        data = Float32Array.from({ length: count }, (_, i) => view.getFloat64(8 * i, true));
    }
    tensors[k] = { dtype: dt.ours, shape: v.shape, data };
  }
  return { tensors, meta };
}
