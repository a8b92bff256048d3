/**
 * The engine's DEFLATE decoder (io/inflate.ts, used for compressed `.pth` entries) against Python's zlib:
 * random, repetitive and all-zero data at levels 0 (stored blocks), 1, 6 and 9, with the default, fixed-
 * Huffman and Huffman-only strategies, must decompress byte for byte; truncated and corrupt streams fail
 * with an error naming the stream.
 */
import { inflateRaw } from "../io/inflate.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";

const SCRIPT = `
import base64, json, random, zlib
random.seed(5)
def raw(data, level, strategy):
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return c.compress(data) + c.flush()
datas = [b"", b"a", bytes(random.getrandbits(8) for _ in range(70000)), b"abcabcabd" * 9000,
         bytes(random.choice(b"ACGT") for _ in range(80000)), bytes(200000)]
out = []
for d in datas:
    for level in [0, 1, 6, 9]:
        for st in [zlib.Z_DEFAULT_STRATEGY, zlib.Z_FIXED, zlib.Z_HUFFMAN_ONLY]:
            out.append({"z": base64.b64encode(raw(d, level, st)).decode(), "d": base64.b64encode(d).decode(),
                        "what": f"{len(d)} bytes, level {level}, strategy {st}"})
print(json.dumps(out))
`;

const b64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

Deno.test("inflateRaw matches zlib; bad streams fail with clear errors", async () => {
  const o = await new Deno.Command(PY, { args: ["-c", SCRIPT], stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
  const cases: { z: string; d: string; what: string }[] = JSON.parse(new TextDecoder().decode(o.stdout));
  for (const c of cases) {
    const z = b64(c.z), d = b64(c.d);
    for (const hint of [0, d.length]) {
      const got = inflateRaw(z, hint, c.what);
      if (got.length !== d.length) throw new Error(`${c.what}: ${got.length} bytes, expected ${d.length}`);
      const bad = got.findIndex((v, i) => v !== d[i]);
      if (bad >= 0) throw new Error(`${c.what}: byte ${bad} is ${got[bad]}, expected ${d[bad]}`);
    }
  }
  const big = cases.find((c) => c.what.startsWith("80000 bytes, level 9, strategy 0"))!;
  const z = b64(big.z);
  const expectError = (f: () => unknown, ...parts: string[]) => {
    try {
      f();
    } catch (e) {
      const m = (e as Error).message;
      for (const p of parts) if (!m.includes(p)) throw new Error(`"${m}" lacks "${p}"`);
      return;
    }
    throw new Error(`no error (expected ${parts.join(", ")})`);
  };
  for (const cut of [1, 7, 500]) {
    expectError(() => inflateRaw(z.subarray(0, z.length - cut), 0, "cut.pth"), "cut.pth", "truncated");
  }
  expectError(() => inflateRaw(new Uint8Array([0x07]), 0, "t3"), "t3", "invalid block type 3");
  // A stored block whose length does not match its complement.
  expectError(() => inflateRaw(new Uint8Array([1, 5, 0, 0, 0, 1, 2, 3, 4, 5])), "stored block length");
  // A fixed-Huffman block: literal "a", then a match of length 3 at distance `dist`, then end of block.
  const fixedBlock = (dist: number) => {
    const bits: number[] = [];
    const lsb = (v: number, n: number) => {
      for (let i = 0; i < n; i++) bits.push((v >> i) & 1);
    };
    const code = (v: number, n: number) => {
      for (let i = n - 1; i >= 0; i--) bits.push((v >> i) & 1);
    };
    lsb(1, 1), lsb(1, 2), code(0x30 + 0x61, 8), code(1, 7), code(dist - 1, 5), code(0, 7);
    const bytes = new Uint8Array(Math.ceil(bits.length / 8));
    bits.forEach((b, i) => (bytes[i >> 3] |= b << (i & 7)));
    return bytes;
  };
  const aaaa = inflateRaw(fixedBlock(1));
  if (new TextDecoder().decode(aaaa) !== "aaaa") throw new Error(`hand-made block gave ${aaaa}`);
  expectError(() => inflateRaw(fixedBlock(2), 0, "far"), "far", "distance 2 reaches before the start");
});
