/**
 * @file Reads and preprocesses studies in a Worker, so that reading the next study (DICOM decoding,
 * resizing: CPU work) overlaps the device work on the current one.
 */
import { type InMemoryStudy, loadStudy } from "./study.ts";

export type { InMemoryStudy };

/** A one-Worker study reader; `load` calls are served in order. */
export class StudyLoader {
  #worker: Worker | null;
  #pending = new Map<number, { resolve: (s: InMemoryStudy) => void; reject: (e: Error) => void }>();
  #next = 0;

  /** `inWorker: false` reads on the main thread (tests, debugging). */
  constructor(inWorker = true) {
    this.#worker = inWorker
      ? new Worker(new URL("./study_worker.ts", import.meta.url), { type: "module" })
      : null;
    if (this.#worker) {
      this.#worker.onmessage = (e: MessageEvent<{ id: number; study?: InMemoryStudy; error?: string }>) => {
        const p = this.#pending.get(e.data.id);
        if (!p) return;
        this.#pending.delete(e.data.id);
        if (e.data.error !== undefined) p.reject(new Error(e.data.error));
        else p.resolve(e.data.study!);
      };
      this.#worker.onerror = (e) => {
        e.preventDefault();
        for (const p of this.#pending.values()) p.reject(new Error(`study reader failed: ${e.message}`));
        this.#pending.clear();
      };
    }
  }

  /** Reads and preprocesses the study in `dir`. */
  load(dir: string): Promise<InMemoryStudy> {
    if (!this.#worker) return loadStudy(dir);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker!.postMessage({ id, dir });
    });
  }

  /** Stops the Worker. */
  close(): void {
    this.#worker?.terminate();
    this.#worker = null;
  }
}
