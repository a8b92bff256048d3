/// <reference lib="deno.worker" />
/**
 * @file Worker side of `preprocessDataset`: preprocesses the studies it is sent, one at a time.
 */
import { preprocessStudy } from "./preprocess.ts";

self.onmessage = async (e: MessageEvent) => {
  const { study, cache, opts } = e.data;
  try {
    await preprocessStudy(study, cache, opts);
    self.postMessage({ uid: study.uid });
  } catch (err) {
    self.postMessage({ uid: study.uid, error: (err as Error).message });
  }
};
