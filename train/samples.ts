/**
 * @file Sample jobs: what the loader asks for ("build the sample described by this spec"), and the code
 * that reads the cache and builds it. The same function runs in the loader's Workers and, with
 * `workers: 0`, on the main thread.
 */
import { readCube } from "../data/cache.ts";
import { mulberry32 as rng } from "../core/random.ts";
import { buildSegSample, type SegSample, type SegSampleSpec } from "./seg_data.ts";
import type { ClsSample, ClsTrainSpec } from "../infer/crops.ts";
import { readClsTrainSample } from "../infer/crops/read.ts";

/**
 * A job for the loader: a segmentation window from the cache, or a synthetic sample (seeded noise with a
 * learnable target; for tests and loader benchmarks, no files needed).
 */
export type SampleJob =
  | { kind: "seg"; cache: string; spec: SegSampleSpec }
  | { kind: "cls"; cache: string; spec: ClsTrainSpec }
  | { kind: "synthetic"; seed: number; shape: [number, number, number]; classes: number; delayMs?: number };

/** What a job produces: host arrays, transferable between threads. */
export type SampleResult = SegSample | ClsSample;

/** Reads and builds one sample. */
export async function runJob(job: SampleJob): Promise<SampleResult> {
  switch (job.kind) {
    case "seg": {
      const s = job.spec;
      const box = { z: [2 * s.start, 2 * (s.start + s.slices)] as [number, number], zStep: 2 };
      const img = await readCube(job.cache, s.uid, "image_256", box);
      const msk = await readCube(job.cache, s.uid, "mask_256", box);
      return buildSegSample(s, img.data, msk.data as Uint8Array, img.shape);
    }
    case "cls":
      return readClsTrainSample(job.cache, job.spec);
    case "synthetic": {
      const r = rng(job.seed);
      const [Z, H, W] = job.shape;
      const image = new Float32Array(Z * H * W), target = new Uint8Array(Z * H * W);
      const cls = Math.floor(r() * job.classes);
      for (let i = 0; i < image.length; i++) {
        target[i] = cls;
        image[i] = (r() - 0.5) + cls / job.classes;
      }
      if (job.delayMs) await new Promise((res) => setTimeout(res, job.delayMs));
      return { image, target, shape: job.shape };
    }
    default:
      throw new Error(`unknown sample job ${(job as { kind: string }).kind}`);
  }
}

/** The transferable buffers of a result (moved, not copied, between threads). */
export function transferables(r: SampleResult): ArrayBuffer[] {
  if ("input" in r) {
    const maps = r.fractures ? [r.fractures.buffer as ArrayBuffer] : [];
    return [r.input.buffer as ArrayBuffer, r.labels.buffer as ArrayBuffer, ...maps];
  }
  return [r.image.buffer as ArrayBuffer, r.target.buffer as ArrayBuffer];
}
