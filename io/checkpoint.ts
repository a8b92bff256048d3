/**
 * @file Checkpoints: `loadCheckpoint` reads ours (.safetensors) or PyTorch's (.pth/.pt) into tensors on a
 * device; `saveCheckpoint` writes safetensors with JSON metadata atomically (temporary file + rename).
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
import { pthStateDict, readPth } from "./pth.ts";
import { type HostTensor, upload } from "./host.ts";
import { writeFileAtomic } from "../core/fs.ts";

/** Metadata stored with our checkpoints. */
export interface CheckpointMeta {
  config?: unknown;
  epoch?: number;
  metrics?: Record<string, number>;
  [k: string]: unknown;
}

async function readFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: checkpoint file not found`);
    throw new Error(`${path}: cannot read checkpoint (${(e as Error).message})`);
  }
}

/** Reads a checkpoint into host tensors (no device), with its metadata when it is ours. */
export async function readCheckpoint(
  path: string,
): Promise<{ tensors: Record<string, HostTensor>; meta: CheckpointMeta }> {
  const buf = await readFile(path);
  if (/\.safetensors$/i.test(path)) {
    const { tensors, meta } = decodeSafetensors(buf, path);
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
  if (/\.(pth|pt|bin|ckpt)$/i.test(path)) {
    return { tensors: pthStateDict(readPth(buf, path), path), meta: {} };
  }
  throw new Error(`${path}: unknown checkpoint extension (expected .safetensors, .pth or .pt)`);
}

/** Loads a checkpoint's state dict (name -> tensor on `device`); `module.` prefixes are stripped. */
export async function loadCheckpoint(
  path: string,
  opts: { device: Device },
): Promise<Record<string, Tensor>> {
  const { tensors } = await readCheckpoint(path);
  return upload(tensors, opts.device);
}

/** Writes tensors and metadata as safetensors, atomically. */
export async function saveCheckpoint(
  path: string,
  sd: Record<string, Tensor>,
  meta: CheckpointMeta = {},
): Promise<void> {
  const strMeta: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) if (v !== undefined) strMeta[k] = JSON.stringify(v);
  await writeFileAtomic(path, await encodeSafetensors(sd, strMeta), "checkpoint");
}

/** Keeps the entries whose names start with `prefix`, with the prefix removed (e.g. "backbone."). */
export function stripPrefix<T>(sd: Record<string, T>, prefix: string): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [k, v] of Object.entries(sd)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
  return out;
}
