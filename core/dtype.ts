/**
 * @file Element types. Storage is always a whole number of 32-bit words: `u8` tensors are packed four to a
 * word (little-endian byte order, as a Uint8Array view of the buffer would see them), so WGSL sees every
 * buffer as an array of 32-bit values.
 */

/**
 * Element type of a tensor. `f16` (IEEE half, two to a 32-bit word) needs the device's `shader-f16` feature;
 * kernels read it widened to f32 (see kernels/codegen.ts) and only casts, convolutions and GEMMs accept it.
 */
export type DType = "f32" | "i32" | "u8" | "f16";

/** Typed array that holds a tensor of the given dtype on the host. */
export type TypedArrayFor<D extends DType> = D extends "f32" ? Float32Array
  : D extends "i32" ? Int32Array
  : D extends "u8" ? Uint8Array
  : Uint16Array;

/** Any host array a tensor can be read into. */
export type HostArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

/** Bytes per element on the host. */
export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case "f32":
    case "i32":
      return 4;
    case "f16":
      return 2;
    case "u8":
      return 1;
  }
}

/** Bytes of GPU storage for `n` elements: rounded up to 16 so vec4 views and packed u8 words stay in bounds. */
export function storageBytes(dtype: DType, n: number): number {
  return Math.max(16, Math.ceil((n * bytesPerElement(dtype)) / 16) * 16);
}

/** WGSL scalar type used for one element in registers (u8 elements are widened to u32, f16 to f32). */
export function wgslScalar(dtype: DType): "f32" | "i32" | "u32" {
  switch (dtype) {
    case "f32":
    case "f16":
      return "f32";
    case "i32":
      return "i32";
    case "u8":
      return "u32";
  }
}

/** Allocates a host typed array of `n` elements. */
export function allocHost(dtype: DType, n: number): HostArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(n);
    case "i32":
      return new Int32Array(n);
    case "u8":
      return new Uint8Array(n);
    case "f16":
      return new Uint16Array(n);
  }
}

/** Throws unless `dtype` is one of the known names. */
export function checkDType(dtype: string, where: string): DType {
  if (dtype === "f32" || dtype === "i32" || dtype === "u8" || dtype === "f16") return dtype;
  throw new Error(`${where}: unknown dtype "${dtype}" (expected f32, i32, u8 or f16)`);
}
