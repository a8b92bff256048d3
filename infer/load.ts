/**
 * @file Models from what training leaves behind: a run folder (its config.json says which model; its
 * best.safetensors, or last.safetensors, holds the weights) or a checkpoint file (our safetensors carry the
 * configuration in their metadata). Inference, training and the browser build models through here.
 */
import { type Device, models, type nn } from "../mod.ts";
import { readCheckpointHost } from "../io/files.ts";
import { type HostTensor, upload } from "../io/host.ts";
import type { CheckpointMeta } from "../io/checkpoint.ts";
import { type Calibration, parseCalibration } from "./calibrate.ts";

/** The model part of a run's configuration. */
export interface ModelConfig {
  model: "CSNUNet" | "CSNClassifier" | "PlainClassifier";
  encoder: string;
  baseChannels?: number;
  decoderFilters?: [number, number, number, number];
  lastChannels?: number;
  numClasses?: number;
  pool?: "max" | "avg";
  dropout?: number;
  /** In-plane input size the model was trained at. */
  size?: number;
  [k: string]: unknown;
}

/** Builds a model from its configuration (random weights). */
export function buildModel(device: Device, c: ModelConfig): nn.Module {
  if (c.model === "CSNUNet") {
    return new models.CSNUNet({
      device,
      encoder: c.encoder,
      baseChannels: c.baseChannels,
      decoderFilters: c.decoderFilters,
      lastChannels: c.lastChannels,
      numClasses: c.numClasses ?? 8,
    });
  }
  if (c.model === "CSNClassifier") {
    return new models.CSNClassifier({
      device,
      encoder: c.encoder,
      baseChannels: c.baseChannels,
      numClasses: c.numClasses ?? 8,
      pool: c.pool,
      dropout: c.dropout,
    });
  }
  if (c.model === "PlainClassifier") {
    return new models.PlainClassifier({
      device,
      widths: c.widths as number[] | undefined,
      numClasses: c.numClasses ?? 8,
      pool: c.pool,
      dropout: c.dropout,
      fractureHead: !!c.fractureHead,
    });
  }
  throw new Error(
    `unknown model "${(c as { model: string }).model}" (expected CSNUNet, CSNClassifier or PlainClassifier)`,
  );
}

/** Resolves a run folder to its checkpoint (best, else last) or returns the file path unchanged. */
export async function resolveWeights(spec: string): Promise<string> {
  const st = await Deno.stat(spec).catch(() => null);
  if (!st) throw new Error(`${spec}: no such run folder or checkpoint`);
  if (!st.isDirectory) return spec;
  for (const f of ["best.safetensors", "last.safetensors"]) {
    if (await Deno.stat(`${spec}/${f}`).then(() => true, () => false)) return `${spec}/${f}`;
  }
  throw new Error(`${spec}: run folder without best.safetensors or last.safetensors`);
}

/** A model for inference with its configuration, its file and, for a calibrated classifier, its calibration. */
export interface LoadedModel {
  model: nn.Module;
  config: ModelConfig;
  path: string;
  /** What `train calibrate` stored in the checkpoint (infer/calibrate.ts); absent when it was not run. */
  calibration?: Calibration;
}

/** A model for inference (see {@link modelFromCheckpoint}) with its configuration, from a run folder or a checkpoint file. */
export async function loadModel(
  spec: string,
  device: Device,
  fallback?: ModelConfig,
): Promise<LoadedModel> {
  const path = await resolveWeights(spec);
  const { tensors, meta } = await readCheckpointHost(path);
  return modelFromCheckpoint(tensors, meta, path, device, fallback);
}

/**
 * {@link loadModel} of a checkpoint already decoded (e.g. by `checkpointFromBytes` in a browser): builds the
 * model its metadata (else `fallback`) describes and loads the tensors; `path` names it in errors. The model
 * is for inference: in eval mode, with every batch norm folded into its conv (`models.fuseConvBn`: one op
 * instead of two per conv, outputs equal to rounding). A calibration in the metadata comes with it.
 */
export function modelFromCheckpoint(
  tensors: Record<string, HostTensor>,
  meta: CheckpointMeta,
  path: string,
  device: Device,
  fallback?: ModelConfig,
): LoadedModel {
  const calibration = meta.calibration === undefined ? undefined : parseCalibration(meta.calibration, path);
  const cfg = (meta.config as { model?: ModelConfig } | undefined)?.model ?? fallback;
  if (!cfg) {
    throw new Error(
      `${path}: no model configuration in its metadata; this checkpoint needs its run's config`,
    );
  }
  const model = buildModel(device, cfg);
  const up = upload(tensors, device);
  try {
    model.loadStateDict(up);
  } catch (e) {
    model.dispose();
    throw new Error(`${path}: does not fit a ${cfg.model} ${cfg.encoder} (${(e as Error).message})`);
  } finally {
    for (const t of Object.values(up)) t.dispose();
  }
  model.eval();
  models.fuseConvBn(model);
  return calibration ? { model, config: cfg, path, calibration } : { model, config: cfg, path };
}

/**
 * Loads the tensors of a pretrained checkpoint (e.g. mmaction2's Kinetics CSN `.pth`) that fit `model`:
 * keys the model lacks or whose shape differs are skipped and reported, as the seed's `--resume` of
 * Kinetics weights does.
 */
export async function initFrom(
  model: nn.Module,
  path: string,
  device: Device,
): Promise<{ loaded: number; skipped: string[]; missing: string[] }> {
  const { tensors } = await readCheckpointHost(path);
  const mine = model.stateDict();
  const fit: typeof tensors = {};
  const skipped: string[] = [];
  for (const [k, v] of Object.entries(tensors)) {
    const t = mine[k];
    if (t && t.shape.join() === v.shape.join()) fit[k] = v;
    else skipped.push(t ? `${k} [${v.shape}] vs model [${t.shape}]` : `${k} (not in the model)`);
  }
  const up = upload(fit, device);
  try {
    model.loadStateDict(up, { strict: false });
  } finally {
    for (const t of Object.values(up)) t.dispose();
  }
  const missing = Object.keys(mine).filter((k) => !(k in fit));
  return { loaded: Object.keys(fit).length, skipped, missing };
}
