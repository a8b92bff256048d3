/**
 * @file The `nn` namespace: modules and initialisers.
 */
export { type LoadOptions, Module, type StateDict } from "./module.ts";
export {
  BatchNorm3d,
  type BatchNorm3dOptions,
  Conv3d,
  type Conv3dModuleOptions,
  Dropout,
  Identity,
  Linear,
  type LinearOptions,
  MaxPool3d,
  ReLU,
  Sequential,
  SiLU,
  Upsample,
} from "./layers.ts";
export { ModuleList } from "./containers.ts";
export { fuseConvBnEval, fuseConvBnWeights } from "./fusion.ts";
export { fanIn, kaimingNormal, seedInit, torchDefaultUniform } from "./init.ts";
