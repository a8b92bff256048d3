/**
 * @file The file layer over `io/`: atomic writes, and checkpoints read from and written to paths. It uses
 * Deno's file APIs, so it is not part of the engine entry (`mod.ts`); import it as `@csn/webgpu/files`.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { encodeSafetensors } from "./safetensors.ts";
import { type HostTensor, upload } from "./host.ts";
import { checkpointFromBytes, type CheckpointMeta } from "./checkpoint.ts";

/** Writes `bytes` to `path` atomically (a temporary file renamed into place); errors name the path. */
export async function writeFileAtomic(path: string, bytes: Uint8Array, what = "file"): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`${path}: cannot write ${what} (${(e as Error).message})`);
  }
}

async function readCheckpointFile(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: checkpoint file not found`);
    throw new Error(`${path}: cannot read checkpoint (${(e as Error).message})`);
  }
}

/** Reads a checkpoint file into host tensors (no device), with its metadata when it is ours. */
export async function readCheckpointHost(
  path: string,
): Promise<{ tensors: Record<string, HostTensor>; meta: CheckpointMeta }> {
  return checkpointFromBytes(await readCheckpointFile(path), path);
}

/** Loads a checkpoint file's state dict onto `device` (name -> tensor); `module.` prefixes are stripped. */
export async function loadCheckpointToDevice(
  path: string,
  opts: { device: Device },
): Promise<Record<string, Tensor>> {
  const { tensors } = await readCheckpointHost(path);
  return upload(tensors, opts.device);
}

/**
 * Writes device or host tensors and metadata (each value JSON-encoded, undefined ones left out) as
 * safetensors, atomically; `what` names the file in errors.
 */
export async function saveCheckpoint(
  path: string,
  sd: Record<string, Tensor | HostTensor>,
  meta: CheckpointMeta = {},
  what = "checkpoint",
): Promise<void> {
  const strMeta: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) if (v !== undefined) strMeta[k] = JSON.stringify(v);
  await writeFileAtomic(path, await encodeSafetensors(sd, strMeta), what);
}
