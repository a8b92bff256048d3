/**
 * @file The study reader's Worker: loadStudy off the main thread, arrays transferred back.
 */
/// <reference lib="deno.worker" />
import { loadStudy } from "./study.ts";

self.onmessage = async (e: MessageEvent<{ id: number; dir: string }>) => {
  const { id, dir } = e.data;
  try {
    const study = await loadStudy(dir);
    const transfer: ArrayBuffer[] = [];
    for (const v of Object.values(study)) {
      if (ArrayBuffer.isView(v) && !transfer.includes(v.buffer as ArrayBuffer)) {
        transfer.push(v.buffer as ArrayBuffer);
      }
    }
    self.postMessage({ id, study }, { transfer });
  } catch (err) {
    self.postMessage({ id, error: (err as Error).message });
  }
};
