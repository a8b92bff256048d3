/**
 * @file Reads and preprocesses studies in a Worker, so that reading the next study (DICOM decoding,
 * resizing: CPU work) overlaps the device work on the current one.
 */
import { type InMemoryStudy, loadStudy } from "./study.ts";
import { WorkerRpc } from "./worker_rpc.ts";

export type { InMemoryStudy };

/** A one-Worker study reader; `load` calls are served in order (`inWorker: false`: on this thread). */
export class StudyLoader extends WorkerRpc<string, InMemoryStudy> {
  constructor(inWorker = true) {
    super(new URL("./study_worker.ts", import.meta.url), "study reader", (dir) => loadStudy(dir), inWorker);
  }

  /** Reads and preprocesses the study in `dir`. */
  load(dir: string): Promise<InMemoryStudy> {
    return this.call(dir);
  }
}
