/**
 * @file The study writer's Worker: writeStudyFiles off the main thread.
 */
/// <reference lib="deno.worker" />
import { type WriteJob, writeStudyFiles } from "./study_writer.ts";

self.onmessage = async (e: MessageEvent<{ id: number; job: WriteJob }>) => {
  const { id, job } = e.data;
  try {
    self.postMessage({ id, result: await writeStudyFiles(job) });
  } catch (err) {
    self.postMessage({ id, error: (err as Error).message });
  }
};
