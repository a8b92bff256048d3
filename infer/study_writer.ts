/**
 * @file A study's files (vertebrae.nii.gz, report.html) and its dice against a truth mask, written in a
 * Worker: that is a second or two of CPU work per 300-slice study (upsampling the labels to the study's grid,
 * the NIfTI layout and gzip, the report's pictures, reading the mask), which on the main thread would hold up
 * the device work on the next studies.
 */
import { writeFileAtomic } from "../io/files.ts";
import { volumeToNifti, writeNifti } from "../data/nifti.ts";
import type { StudyRef } from "./discover.ts";
import { studyDice, truthMaskPath } from "./evaluate.ts";
import type { StudyMeta } from "./meta.ts";
import { upsampleLabels } from "./nifti_out.ts";
import { type ReportCrop, studyReportHtml } from "./report.ts";
import type { InMemoryStudy } from "./study.ts";
import { buffersOf, WorkerRpc } from "./worker_rpc.ts";

/** What to write for one study (everything structured-cloneable; crops carry their pictures, not data). */
export interface WriteJob {
  ref: StudyRef;
  /** The run's output folder: files go to `<out>/<uid>/`. */
  out: string;
  nifti: boolean;
  report: boolean;
  /** Where truth masks are (`--masks`), else beside train_images/ in the RSNA layout. */
  masks?: string;
  study: InMemoryStudy;
  /** Predicted labels [ceil(Z / 2), 256, 256]. */
  labels: Uint8Array;
  meta: StudyMeta;
  probabilities: number[];
  crops: ReportCrop[];
  /** Step times so far (ms), shown in the report. */
  timings: Record<string, number>;
}

/** The dice against the study's truth mask, where it has one. */
export interface WriteResult {
  mask?: string;
  dice?: (number | null)[];
  /** Why the mask could not be compared (the prediction itself is kept). */
  maskError?: string;
}

/** Writes one study's files (see the file's comment); on any thread. */
export async function writeStudyFiles(job: WriteJob): Promise<WriteResult> {
  const { ref, study, labels } = job;
  const dir = `${job.out}/${ref.uid}`;
  await Deno.mkdir(dir, { recursive: true });
  // The labels on the study's own grid: what vertebrae.nii.gz holds, and what the dice compares.
  const full = upsampleLabels(labels, study.geometry.shape);
  if (job.nifti) await writeNifti(`${dir}/vertebrae.nii.gz`, volumeToNifti(full, study.geometry));
  if (job.report) await writeStudyReport(`${dir}/report.html`, job);
  const res: WriteResult = {};
  const mask = await truthMaskPath(ref, job.masks);
  if (mask) {
    res.mask = mask;
    try {
      res.dice = await studyDice(mask, full, study.geometry.shape);
    } catch (e) {
      // A bad mask spoils the dice, not the prediction.
      res.maskError = (e as Error).message;
    }
  }
  return res;
}

/** A study's report.html: the 256 cube with the predicted labels, crops, probabilities, timings (ms). */
async function writeStudyReport(path: string, job: WriteJob): Promise<void> {
  const { study } = job, h = study.header;
  const [Z] = h.cubes.image_256!;
  const html = await studyReportHtml({
    uid: job.ref.uid,
    image: {
      data: study.image_256,
      shape: [Z, 256, 256],
      slope: h.units === "hu" ? 1 : h.rescale.slope,
      intercept: h.units === "hu" ? 0 : h.rescale.intercept,
      // The 256 cube's voxel size: the series' in-plane spacing scaled by its size / 256.
      spacing: [
        h.spacing[0],
        (h.spacing[1] * study.geometry.shape[1]) / 256,
        (h.spacing[2] * study.geometry.shape[2]) / 256,
      ],
    },
    labels: { data: job.labels, shape: [Math.ceil(Z / 2), 256, 256] },
    meta: job.meta,
    crops: job.crops,
    probabilities: job.probabilities,
    timings: job.timings,
  });
  await writeFileAtomic(path, new TextEncoder().encode(html), "report");
}

/**
 * A one-Worker study writer; jobs are served in order (`inWorker: false`: on this thread). `write` transfers
 * the job's arrays (the study's images and the labels): the caller must not use them afterwards.
 */
export class StudyWriter extends WorkerRpc<WriteJob, WriteResult> {
  constructor(inWorker = true) {
    super(new URL("./study_write_worker.ts", import.meta.url), "study writer", writeStudyFiles, inWorker);
  }

  /** Writes one study's files; resolves with its dice (if it has a truth mask). */
  write(job: WriteJob): Promise<WriteResult> {
    return this.call(job, buffersOf([job.study.image_full, job.study.image_256, job.labels]));
  }
}
