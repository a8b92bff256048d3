/**
 * @file The `io` namespace: checkpoints.
 */
export {
  type CheckpointMeta,
  loadCheckpoint,
  readCheckpoint,
  saveCheckpoint,
  stripPrefix,
} from "./checkpoint.ts";
export { type HostTensor, upload } from "./host.ts";
export { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
export { pthStateDict, PthTensor, readPth } from "./pth.ts";
