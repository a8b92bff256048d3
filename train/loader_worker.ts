/**
 * @file A loader Worker: builds samples (cache reads, augmentation) off the main thread, so the device
 * does not wait for data.
 */
/// <reference lib="deno.worker" />
import { runJob, type SampleJob, transferables } from "./samples.ts";

self.onmessage = async (e: MessageEvent<{ id: number; job: SampleJob }>) => {
  const { id, job } = e.data;
  try {
    const r = await runJob(job);
    self.postMessage({ id, result: r }, { transfer: transferables(r) });
  } catch (err) {
    self.postMessage({ id, error: `${(err as Error).message}` });
  }
};
