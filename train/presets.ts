/**
 * @file Stage configurations: `seed` is the 4th-place solution's (seed-pipeline.md), `tiny` fits the 2-core
 * CPU machine (lavapipe) and still learns the phantoms. Flags override single values.
 */

/** Segmentation-stage configuration. */
export interface SegConfig {
  encoder: string;
  /** Encoder width (64 = the real ResNet3dCSN). */
  baseChannels: number;
  decoderFilters: [number, number, number, number];
  lastChannels: number;
  /** Slices of a training window ([::2] grid) and in-plane size fed to the model. */
  slices: number;
  size: number;
  batch: number;
  epochs: number;
  lr: number;
  /** Linear warm-up steps before the cosine (seed 0); the cosine then spans the remaining steps. */
  warmup: number;
  etaMin: number;
  weightDecay: number;
  clip: number;
  /** Times the train list is repeated per epoch (the seed's `multiplier`). */
  multiplier: number;
  /** Validation sliding window over whole studies (seed 2.5: 256 / 64). */
  valWindow: number;
  valOverlap: number;
  /** Folds of seg_folds.csv when it is written, and the validation fold. */
  folds: number;
  fold: number;
  /** Augmentations on (seed 2.2). */
  augment: boolean;
  /** Weight of the Jaccard term of the seed's loss (seed 0.1). */
  jaccardWeight: number;
  /** Weight of vertebra voxels in the focal term (seed 1; models.segLoss fgWeight). */
  fgWeight: number;
}

/** The seed's segmentation stage (r50ir CSN-UNet, 64x256x256, batch 4, 40 epochs, lr 2e-4). */
export const SEG_SEED: SegConfig = {
  encoder: "r50ir",
  baseChannels: 64,
  decoderFilters: [40, 64, 128, 256],
  lastChannels: 32,
  slices: 64,
  size: 256,
  batch: 4,
  epochs: 40,
  lr: 2e-4,
  warmup: 0,
  etaMin: 1e-5,
  weightDecay: 0.01,
  clip: 5,
  multiplier: 64,
  valWindow: 256,
  valOverlap: 64,
  folds: 8,
  fold: 1,
  augment: true,
  jaccardWeight: 0.1,
  fgWeight: 1,
};

/**
 * Small enough for the CPU machine and still learns the phantoms' levels in the main job's time: a narrow
 * ir-CSN-26 UNet on 32 x 32 x 32 windows (in-plane 4.7-5.9 mm: the level is what must be learnt, and at 64 px
 * a step costs 3x more on lavapipe, so too few fit), with a decoder wider than the encoder's 8 channels
 * (8-channel decoder stages learnt the levels several times slower in PyTorch), vertebra voxels weighted 20x
 * in the focal term and a full-weight Jaccard term (otherwise a few hundred steps settle on background), a
 * 30-step warm-up to lr 2e-3. 9 epochs, 1377 steps (mean dice of six seeds in PyTorch: 0.36-0.51, mean 0.43, for
 * 6 epochs; 0.46-0.52, mean 0.48, for 8; 0.43-0.57, mean 0.50, for 9; the 4 epochs of the first preset stopped
 * at 0.36); docs/recipe.md has the search and both engines' curves.
 */
export const SEG_TINY: SegConfig = {
  encoder: "r26ir",
  baseChannels: 8,
  decoderFilters: [16, 32, 32, 64],
  lastChannels: 16,
  slices: 32,
  size: 32,
  batch: 2,
  epochs: 9,
  lr: 2e-3,
  warmup: 30,
  etaMin: 1e-5,
  weightDecay: 0.01,
  clip: 5,
  multiplier: 9,
  valWindow: 64,
  valOverlap: 16,
  folds: 4,
  fold: 1,
  augment: true,
  jaccardWeight: 1,
  fgWeight: 20,
};

/** Presets by name. */
export const SEG_PRESETS: Record<string, SegConfig> = { seed: SEG_SEED, tiny: SEG_TINY };

/** Classifier-stage configuration (one encoder, one fold). */
export interface ClsConfig {
  /** A CSN (r152ir, r26ir, ...) or "plain": the plain 3-D CNN of models/plain.ts with `widths`. */
  encoder: string;
  baseChannels: number;
  /** The plain CNN's block widths (default 16, 32, 64, 64). */
  widths?: number[];
  /**
   * Weight of the fracture-map loss (plain CNN only; 0 or absent: none): a second BCE on where the fractures
   * are, from train_bounding_boxes.csv, on the last feature map, for the studies whose fractures are known.
   */
  fractureWeight?: number;
  /** BCE pos_weight of a fractured cell of that map (default 10: few cells hold a fracture). */
  fracturePosWeight?: number;
  /** Crop D, H (= W) fed to the model (seed 40, 256). */
  crop: [number, number];
  batch: number;
  epochs: number;
  lr: number;
  /** Linear warm-up steps before the cosine (seed 0). */
  warmup: number;
  etaMin: number;
  weightDecay: number;
  clip: number;
  dropout: number;
  /** Times the train list is repeated per epoch (seed: 8 for ir, 2 for ip). */
  multiplier: number;
  /** Folds of folds.csv when it is written, and the validation fold. */
  folds: number;
  fold: number;
  /** Vertebrae with at most this many predicted voxels are not training candidates (seed 512). */
  minArea: number;
  /** Epochs averaged by `train average` (seed: 5 for ir, 3 for ip). */
  averageBest: number;
  /** Reproduce the seed's validation-crop bug (7.3). */
  seedValBug: boolean;
  /**
   * Reproduce the seed's visibility rule as coded (7.4: crop voxels at S x S against meta-grid voxels). Off,
   * both are meta-grid voxels; at the tiny preset's S = 64 the seed's way drops half the fractured labels.
   */
  seedVisibility: boolean;
}

const CLS_SEED_BASE: Omit<ClsConfig, "encoder" | "multiplier" | "averageBest"> = {
  baseChannels: 64,
  crop: [40, 256],
  batch: 16,
  epochs: 50,
  lr: 3e-4,
  warmup: 0,
  etaMin: 1e-5,
  weightDecay: 0.01,
  clip: 5,
  dropout: 0.5,
  folds: 8,
  fold: 0,
  minArea: 512,
  seedValBug: false,
  seedVisibility: false,
};

/** The seed's classifiers: ir-CSN-152 (multiplier 8, 5 epochs averaged) and ip-CSN-152 (2, 3). */
export const CLS_SEED: Record<"ir" | "ip", ClsConfig> = {
  ir: { ...CLS_SEED_BASE, encoder: "r152ir", multiplier: 8, averageBest: 5 },
  ip: { ...CLS_SEED_BASE, encoder: "r152ip", multiplier: 2, averageBest: 3 },
};

/** Small enough for the CPU machine: a narrow ir-CSN-26 on 16 x 64 x 64 crops. */
export const CLS_TINY: ClsConfig = {
  encoder: "r26ir",
  baseChannels: 8,
  crop: [16, 64],
  batch: 8,
  epochs: 6,
  lr: 3e-3,
  warmup: 0,
  etaMin: 1e-5,
  weightDecay: 0.01,
  clip: 5,
  dropout: 0.5,
  multiplier: 4,
  folds: 4,
  fold: 0,
  minArea: 512,
  averageBest: 3,
  seedValBug: false,
  seedVisibility: false,
};

/** What `--encoder plain` changes in a preset: the plain CNN's widths and its fracture-map loss. */
export const CLS_PLAIN: Partial<ClsConfig> = {
  widths: [16, 32, 64, 64],
  fractureWeight: 1,
  fracturePosWeight: 10,
  dropout: 0,
};

/**
 * `--preset tiny --encoder plain` (docs/recipe.md, "A fracture-map loss"): the plain 3-D CNN on 16 x 64 x 64
 * crops with the fracture-map loss, lr 1e-3 with a short warm-up, no dropout, and the ~1400 steps it needed
 * to find the fractures on 299 development studies. Not the default: on the main job's 71 training studies
 * and predicted masks it did not beat the constant, and it doubles the main job's time.
 */
export const CLS_TINY_PLAIN: ClsConfig = {
  ...CLS_TINY,
  ...CLS_PLAIN,
  encoder: "plain",
  lr: 1e-3,
  warmup: 20,
  epochs: 8,
  multiplier: 20,
};
