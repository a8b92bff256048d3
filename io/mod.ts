/**
 * @file The `io` namespace of the engine: checkpoints from and to bytes (safetensors, PyTorch `.pth`
 * import) and host tensors. Reading and writing files is in `io/files.ts`, outside the engine entry.
 */
export { checkpointFromBytes, type CheckpointMeta, stripPrefix } from "./checkpoint.ts";
export { type HostTensor, upload } from "./host.ts";
export { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
export { pthStateDict, PthTensor, readPth } from "./pth.ts";
