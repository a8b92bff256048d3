/**
 * @module csn-webgpu: a deep-learning engine on WebGPU. This entry is the engine only (device, tensors,
 * autograd, `F`, `nn`, `optim`, `models`, `io` on bytes): it uses web APIs only, so it loads in a Worker
 * without permissions or in a browser bundle. The CT pipeline has its own entries: `./data` (`data/mod.ts`)
 * and `./files` (`io/files.ts`: checkpoint files, atomic writes).
 *
 * ```ts
 * import { F, openDevice, tensor, tidy } from "./mod.ts";
 * const device = await openDevice();
 * const x = tensor([1, 2, 3, 4], [2, 2], { device, requiresGrad: true });
 * const loss = F.sum(F.relu(F.matmul(x, x)));
 * loss.backward();
 * console.log(await x.grad!.toArray());
 * ```
 */
export { type DeviceInfo, type DeviceOptions, listAdapters, openDevice } from "./core/device.ts";
export type { Device } from "./core/device.ts";
export type { TuneDecision, Tuner } from "./core/tuner.ts";
export { numel, Tensor, tensor, type TensorOptions } from "./core/tensor.ts";
export type { DType } from "./core/dtype.ts";
export { isGradEnabled, noGrad } from "./core/autograd.ts";
export { keep, tidy } from "./core/scope.ts";
export { arange, full, ones, onesLike, rand, randn, zeros, zerosLike } from "./kernels/creation.ts";
export { autocast, hasF16, setAutocast } from "./kernels/cast.ts";
export * as F from "./kernels/mod.ts";
export * as nn from "./nn/mod.ts";
export * as optim from "./optim/mod.ts";
export * as models from "./models/mod.ts";
export * as io from "./io/mod.ts";
