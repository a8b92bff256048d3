/**
 * @file Weight initialisations (PyTorch's formulas), seeded through the GPU random generator.
 */
import type { Device } from "../core/device.ts";
import type { Tensor } from "../core/tensor.ts";
import { rand, randn, zeros } from "../kernels/creation.ts";

let counter = (Math.random() * 2 ** 31) >>> 0;

/** Makes the initialisers that get no explicit seed reproducible from here on. */
export function seedInit(seed: number): void {
  counter = seed >>> 0;
}

/** A fresh seed for an initialiser when the caller gave none. */
export function nextSeed(): number {
  counter = (counter + 0x9e3779b9) >>> 0;
  return counter;
}

/** fan_in of a weight [out, in, k...]: in * prod(k). */
export function fanIn(shape: readonly number[]): number {
  return shape.slice(1).reduce((p, d) => p * d, 1);
}

/** Kaiming normal, fan-in mode, ReLU gain: N(0, 2 / fan_in) (what the seed uses for its convs). */
export function kaimingNormal(shape: readonly number[], device: Device, seed: number = nextSeed()): Tensor {
  return randn(shape, { device, seed, std: Math.sqrt(2 / fanIn(shape)) });
}

/** PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)). */
export function torchDefaultUniform(
  shape: readonly number[],
  fan: number,
  device: Device,
  seed: number = nextSeed(),
): Tensor {
  const b = 1 / Math.sqrt(fan);
  return rand(shape, { device, seed, low: -b, high: b });
}

export { zeros };
