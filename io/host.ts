/**
 * @file Host-side tensors (what checkpoint readers produce before upload) and their upload to a device.
 */
import type { Device } from "../core/device.ts";
import { type Tensor, tensor } from "../core/tensor.ts";
import { keep } from "../core/scope.ts";

/** A tensor on the host: f32 / i32 / u8 data in row-major order. */
export interface HostTensor {
  dtype: "f32" | "i32" | "u8";
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

/** Uploads host tensors to `device` (kept out of tidy scopes). */
export function upload(host: Record<string, HostTensor>, device: Device): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, h] of Object.entries(host)) {
    out[k] = keep(tensor(h.data, h.shape, { device, dtype: h.dtype }));
  }
  return out;
}

/** IEEE half (as uint16 bits) to f32. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}
