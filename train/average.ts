/**
 * @file Checkpoint averaging (seed-pipeline.md 4.8, `average_weights.py`): the `best` epochs of a run with
 * the lowest validation metric (the classifier's `loss`, lower is better) are averaged tensor by tensor into
 * `RUN/swa-best-N.safetensors`. Float tensors are summed in float64 and the mean rounded once to float32;
 * integer tensors (e.g. BatchNorm's num_batches_tracked) are taken from the best epoch, as in the seed.
 */
import { readCheckpointHost, saveCheckpoint } from "../io/files.ts";
import type { HostTensor } from "../io/host.ts";

/** What {@link averageCheckpoints} wrote. */
export interface AveragedCheckpoint {
  path: string;
  /** Averaged epochs, best first. */
  epochs: number[];
  /** Their metric values, in the same order. */
  values: number[];
}

/** Path of an epoch's checkpoint in a run folder (`epoch-NNN.safetensors`, as the trainer names it). */
export function epochCheckpoint(runDir: string, epoch: number): string {
  return `${runDir}/epoch-${String(epoch).padStart(3, "0")}.safetensors`;
}

/**
 * The epochs of `RUN/log.jsonl` ordered by their validation `metric` (ascending, or descending with
 * `mode: "max"`; ties keep the earlier epoch). Epoch records are the lines with `metrics`; when an epoch
 * appears twice (a resumed run), its last record counts. Epochs without a finite value are left out.
 */
export async function rankEpochs(
  runDir: string,
  opts: { metric?: string; mode?: "min" | "max" } = {},
): Promise<{ epoch: number; value: number }[]> {
  const metric = opts.metric ?? "loss", path = `${runDir}/log.jsonl`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read the run's log (${(e as Error).message})`);
  }
  const last = new Map<number, number>();
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let r: { epoch?: unknown; metrics?: Record<string, unknown> };
    try {
      r = JSON.parse(line);
    } catch {
      throw new Error(`${path}: line ${i + 1} is not JSON`);
    }
    if (!r || typeof r.metrics !== "object" || r.metrics === null) return;
    if (!Number.isInteger(r.epoch)) {
      throw new Error(`${path}: line ${i + 1}: epoch record without an integer epoch`);
    }
    const v = r.metrics[metric];
    if (typeof v === "number" && Number.isFinite(v)) last.set(r.epoch as number, v);
    else last.delete(r.epoch as number);
  });
  const sign = opts.mode === "max" ? -1 : 1;
  return [...last].map(([epoch, value]) => ({ epoch, value }))
    .sort((a, b) => sign * (a.value - b.value) || a.epoch - b.epoch);
}

/**
 * Averages the `best` epochs of the run in `runDir` with the lowest validation `loss` (see
 * {@link rankEpochs}; `metric`/`mode` choose another) and writes `RUN/swa-best-<best>.safetensors`
 * atomically, with the best checkpoint's metadata plus `averaged: [epochs]`. All checkpoints must hold the
 * same tensor names, shapes and dtypes. Errors name the missing checkpoint files when fewer than `best` of the
 * chosen epochs have one (the trainer keeps only its `keep` best epochs).
 */
export async function averageCheckpoints(
  runDir: string,
  best: number,
  opts: { metric?: string; mode?: "min" | "max" } = {},
): Promise<AveragedCheckpoint> {
  if (!(Number.isInteger(best) && best >= 1)) {
    throw new Error(`averageCheckpoints: best must be a positive integer, got ${best}`);
  }
  const metric = opts.metric ?? "loss";
  const ranked = await rankEpochs(runDir, opts);
  if (ranked.length < best) {
    throw new Error(
      `${runDir}/log.jsonl: ${ranked.length} epoch(s) with a validation ${metric}, cannot average the best ${best}`,
    );
  }
  const chosen = ranked.slice(0, best);
  const paths = chosen.map((e) => epochCheckpoint(runDir, e.epoch));
  const present = await Promise.all(paths.map((p) => Deno.stat(p).then((s) => s.isFile, () => false)));
  const missing = paths.filter((_, i) => !present[i]);
  if (missing.length) {
    throw new Error(
      `averageCheckpoints: the ${best} best epochs by ${metric} are ${
        chosen.map((e) => e.epoch).join(", ")
      } but ${missing.length} checkpoint(s) are missing: ${
        missing.join(", ")
      } (train with --keep >= ${best})`,
    );
  }
  const first = await readCheckpointHost(paths[0]);
  const names = Object.keys(first.tensors);
  const sums = new Map<string, Float64Array>();
  for (const k of names) {
    const t = first.tensors[k];
    if (t.dtype === "f32") sums.set(k, Float64Array.from(t.data));
  }
  for (let i = 1; i < paths.length; i++) {
    const { tensors } = await readCheckpointHost(paths[i]);
    const extra = Object.keys(tensors).filter((k) => !(k in first.tensors));
    if (extra.length) throw new Error(`${paths[i]}: tensor ${extra[0]} is not in ${paths[0]}`);
    for (const k of names) {
      const a = first.tensors[k], b = tensors[k];
      if (!b) throw new Error(`${paths[i]}: tensor ${k} is missing (present in ${paths[0]})`);
      if (a.dtype !== b.dtype || a.shape.join() !== b.shape.join()) {
        throw new Error(
          `${paths[i]}: tensor ${k} is ${b.dtype}[${b.shape}], ${paths[0]} has ${a.dtype}[${a.shape}]`,
        );
      }
      const s = sums.get(k);
      if (s) { for (let j = 0; j < s.length; j++) s[j] += b.data[j]; }
    }
  }
  const out: Record<string, HostTensor> = {};
  for (const k of names) {
    const t = first.tensors[k], s = sums.get(k);
    if (!s) {
      out[k] = t;
      continue;
    }
    const avg = new Float32Array(s.length);
    for (let j = 0; j < s.length; j++) avg[j] = s[j] / best;
    out[k] = { dtype: "f32", shape: [...t.shape], data: avg };
  }
  const path = `${runDir}/swa-best-${best}.safetensors`;
  const meta = { ...first.meta, averaged: chosen.map((e) => e.epoch) };
  await saveCheckpoint(path, out, meta, "averaged checkpoint");
  return { path, epochs: chosen.map((e) => e.epoch), values: chosen.map((e) => e.value) };
}
