/**
 * @file Reading many tensors back to the host with one GPU wait: every tensor's storage is copied into one
 * staging tensor and read once (each read waits for the GPU, about 11 ms on Deno even when idle, so reading
 * a model's hundreds of tensors one by one would cost seconds).
 */
import { Storage, Tensor } from "../core/tensor.ts";
import { bytesPerElement } from "../core/dtype.ts";
import type { HostTensor } from "./host.ts";

/** Host copies of `tensors` (same order), read with a single GPU wait per device. */
export async function downloadTensors(tensors: readonly Tensor[]): Promise<HostTensor[]> {
  const out: HostTensor[] = new Array(tensors.length);
  const byDevice = new Map<Tensor["device"], number[]>();
  tensors.forEach((t, i) => {
    if (t.dtype === "f16") {
      throw new Error(`downloadTensors: tensor ${i} ${t.describe()} is f16 (not supported)`);
    }
    const l = byDevice.get(t.device) ?? [];
    l.push(i);
    byDevice.set(t.device, l);
  });
  for (const [device, idx] of byDevice) {
    const offsets: number[] = [];
    let total = 0;
    for (const i of idx) {
      offsets.push(total);
      total += tensors[i].storage("downloadTensors").bytes;
    }
    if (total === 0) continue;
    // Untracked staging storage: freed here whatever scope we are in.
    const staging = Storage.alloc(device, "u8", total, "downloadTensors");
    try {
      idx.forEach((i, k) => {
        const s = tensors[i].storage("downloadTensors");
        device.copy(s.buffer, 0, staging.buffer, offsets[k], s.bytes);
      });
      const view = new Tensor(device, [total], "u8", staging, false);
      const bytes = (await view.toArray()) as Uint8Array;
      idx.forEach((i, k) => {
        const t = tensors[i];
        const n = t.numel(), nb = n * bytesPerElement(t.dtype);
        const copy = bytes.slice(offsets[k], offsets[k] + nb).buffer;
        const data = t.dtype === "f32"
          ? new Float32Array(copy)
          : t.dtype === "i32"
          ? new Int32Array(copy)
          : new Uint8Array(copy);
        out[i] = { dtype: t.dtype as HostTensor["dtype"], shape: [...t.shape], data };
      });
    } finally {
      staging.release();
    }
  }
  return out;
}
