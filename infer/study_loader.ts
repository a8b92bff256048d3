/**
 * @file Reads and preprocesses studies in a Worker, so that reading the next study (DICOM decoding,
 * resizing: CPU work) overlaps the device work on the current one.
 */
import { type InMemoryStudy, loadStudy } from "./study.ts";
import { WorkerRpc } from "./worker_rpc.ts";

export type { InMemoryStudy };

/** A one-Worker study reader; `load` calls are served in order. */
export class StudyLoader {
  #rpc: WorkerRpc<string, InMemoryStudy> | null;

  /** `inWorker: false` reads on the main thread (tests, debugging). */
  constructor(inWorker = true) {
    this.#rpc = inWorker
      ? new WorkerRpc(new URL("./study_worker.ts", import.meta.url), "study reader")
      : null;
  }

  /** Reads and preprocesses the study in `dir`. */
  load(dir: string): Promise<InMemoryStudy> {
    return this.#rpc ? this.#rpc.call(dir) : loadStudy(dir);
  }

  /** Stops the Worker. */
  close(): void {
    this.#rpc?.close();
    this.#rpc = null;
  }
}
