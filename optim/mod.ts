/**
 * @file The `optim` namespace.
 */
export { AdamW, type AdamWOptions, type AdamWState, type ParamGroup } from "./adamw.ts";
export { clipGradNorm } from "./clip.ts";
export { type CosineOptions, cosineSchedule } from "./schedule.ts";
export { GradScaler, type GradScalerOptions, type ScalerReport } from "./grad_scaler.ts";
