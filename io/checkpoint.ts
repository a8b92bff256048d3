/**
 * @file Checkpoints from bytes: ours (safetensors with JSON metadata) or PyTorch's (`.pth`/`.pt` ZIP
 * archives), told apart by the name's extension. No file access here, so the engine can read checkpoints
 * in a browser or a Worker without permissions; `io/files.ts` adds the path-based readers and the writer.
 */
import { decodeSafetensors } from "./safetensors.ts";
import { pthStateDict, readPth } from "./pth.ts";
import type { HostTensor } from "./host.ts";

/** Metadata stored with our checkpoints. */
export interface CheckpointMeta {
  config?: unknown;
  epoch?: number;
  metrics?: Record<string, number>;
  [k: string]: unknown;
}

/**
 * Decodes a checkpoint held in memory into host tensors, with its metadata when it is ours. `name` (a file
 * name or path) picks the format by extension (.safetensors, or .pth/.pt/.bin/.ckpt) and names errors.
 */
export function checkpointFromBytes(
  bytes: Uint8Array,
  name: string,
): { tensors: Record<string, HostTensor>; meta: CheckpointMeta } {
  if (/\.safetensors$/i.test(name)) {
    const { tensors, meta } = decodeSafetensors(bytes, name);
    const parsed: CheckpointMeta = {};
    for (const [k, v] of Object.entries(meta)) {
      try {
        parsed[k] = JSON.parse(v);
      } catch {
        parsed[k] = v;
      }
    }
    return { tensors, meta: parsed };
  }
  if (/\.(pth|pt|bin|ckpt)$/i.test(name)) {
    return { tensors: pthStateDict(readPth(bytes, name), name), meta: {} };
  }
  throw new Error(`${name}: unknown checkpoint extension (expected .safetensors, .pth or .pt)`);
}

/** Keeps the entries whose names start with `prefix`, with the prefix removed (e.g. "backbone."). */
export function stripPrefix<T>(sd: Record<string, T>, prefix: string): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [k, v] of Object.entries(sd)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
  return out;
}
