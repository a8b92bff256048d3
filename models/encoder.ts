/**
 * @file Encoder names as the seed writes them ("r50ir", "r152ip", ...) and the backbone they name, shared by
 * the segmentor and the classifier.
 */
import type { Device } from "../core/device.ts";
import { ResNet3dCSN } from "./csn.ts";

/** Depth and bottleneck of an encoder name like "r152ir". */
export function parseEncoder(name: string): { depth: 26 | 50 | 101 | 152; bottleneck: "ir" | "ip" } {
  const m = /^r(26|50|101|152)(ir|ip)$/.exec(name);
  if (!m) throw new Error(`unknown encoder "${name}" (expected r26ir, r50ir, r101ip, r152ir, r152ip, ...)`);
  return { depth: Number(m[1]) as 26 | 50 | 101 | 152, bottleneck: m[2] as "ir" | "ip" };
}

/** The ResNet3dCSN an encoder name describes, `baseChannels` wide (default 64). */
export function buildBackbone(device: Device, encoder: string, baseChannels?: number): ResNet3dCSN {
  const enc = parseEncoder(encoder);
  return new ResNet3dCSN({ device, depth: enc.depth, bottleneck: enc.bottleneck, baseChannels });
}
