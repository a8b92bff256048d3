/**
 * @file The `models` namespace: the CSN backbone, segmentor and classifier, a plain 3-D CNN classifier, the
 * task's losses, and `summary`.
 */
export { ConvModule, CSN_DEPTHS, CSNBottleneck, type CSNOptions, fuseConvBn, ResNet3dCSN } from "./csn.ts";
export { CSNUNet, type CSNUNetOptions, Unit2p1d } from "./unet.ts";
export { CSNClassifier, type CSNClassifierOptions } from "./classifier.ts";
export { PlainClassifier, type PlainClassifierOptions } from "./plain.ts";
export { rsnaLoss, segLoss, type SegLossOptions } from "./losses.ts";
export { type Summary, summary } from "./summary.ts";
