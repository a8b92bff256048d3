/**
 * @file The study reader's Worker: loadStudy off the main thread, arrays transferred back.
 */
/// <reference lib="deno.worker" />
import { loadStudy } from "./study.ts";
import { buffersOf, serveRequests } from "./worker_rpc.ts";

serveRequests(async (dir: string) => {
  const study = await loadStudy(dir);
  return { result: study, transfer: buffersOf(Object.values(study).filter(ArrayBuffer.isView)) };
});
