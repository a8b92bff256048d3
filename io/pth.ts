/**
 * @file Import of PyTorch `.pth`/`.pt` files written by `torch.save` (the ZIP format of torch >= 1.6): the
 * pickled object graph is read with a whitelisting unpickler, storages come from the archive's data
 * entries, and tensors are rebuilt from (storage, offset, size, stride) into contiguous host arrays.
 * float32/float16/float64 become f32, int64/int32 become i32, uint8/bool become u8.
 */
import { ZipArchive } from "./zip.ts";
import { type GlobalResolver, PDict, unpickle } from "./pickle.ts";
import { halfToFloat, type HostTensor } from "./host.ts";

const STORAGES: Record<string, { bytes: number; kind: string }> = {
  FloatStorage: { bytes: 4, kind: "f32" },
  HalfStorage: { bytes: 2, kind: "f16" },
  DoubleStorage: { bytes: 8, kind: "f64" },
  LongStorage: { bytes: 8, kind: "i64" },
  IntStorage: { bytes: 4, kind: "i32" },
  ShortStorage: { bytes: 2, kind: "i16" },
  ByteStorage: { bytes: 1, kind: "u8" },
  CharStorage: { bytes: 1, kind: "i8" },
  BoolStorage: { bytes: 1, kind: "u8" },
  BFloat16Storage: { bytes: 2, kind: "bf16" },
};

interface Storage {
  kind: string;
  bytes: number;
  data: DataView;
  numel: number;
}

/** A rebuilt tensor (host data) inside the unpickled object graph. */
export class PthTensor {
  constructor(readonly host: HostTensor) {}
}

function readElem(s: Storage, i: number): number {
  const o = i * s.bytes;
  switch (s.kind) {
    case "f32":
      return s.data.getFloat32(o, true);
    case "f16":
      return halfToFloat(s.data.getUint16(o, true));
    case "bf16":
      return new Float32Array(new Uint32Array([s.data.getUint16(o, true) << 16]).buffer)[0];
    case "f64":
      return s.data.getFloat64(o, true);
    case "i64":
      return Number(s.data.getBigInt64(o, true));
    case "i32":
      return s.data.getInt32(o, true);
    case "i16":
      return s.data.getInt16(o, true);
    case "i8":
      return s.data.getInt8(o);
    default:
      return s.data.getUint8(o);
  }
}

function rebuild(
  where: string,
  storage: unknown,
  offset: unknown,
  size: unknown,
  stride: unknown,
): PthTensor {
  const s = storage as Storage;
  if (!s || typeof s !== "object" || !("kind" in s)) throw new Error(`${where}: tensor without a storage`);
  const shape = [...(size as number[])];
  const strides = [...(stride as number[])];
  const n = shape.reduce((p, d) => p * d, 1);
  const dtype: HostTensor["dtype"] =
    s.kind === "i64" || s.kind === "i32" || s.kind === "i16" || s.kind === "i8"
      ? "i32"
      : s.kind === "u8"
      ? "u8"
      : "f32";
  const data = dtype === "f32"
    ? new Float32Array(n)
    : dtype === "i32"
    ? new Int32Array(n)
    : new Uint8Array(n);
  const off = offset as number;
  // Row-major walk with the file's strides (tensors may be views of a larger storage).
  const idx = new Array(shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let src = off;
    for (let d = 0; d < shape.length; d++) src += idx[d] * strides[d];
    if (src >= s.numel) {
      throw new Error(`${where}: tensor [${shape}] reads past its storage of ${s.numel} elements`);
    }
    data[k] = readElem(s, src);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return new PthTensor({ dtype, shape, data });
}

/** Unpickles a torch.save ZIP file into a plain object graph with {@link PthTensor} leaves. */
export function readPth(buf: Uint8Array, path: string): unknown {
  if (buf.length >= 2 && buf[0] === 0x80 && buf[1] === 0x02) {
    throw new Error(
      `${path}: legacy (pre-1.6, non-ZIP) torch.save format is not supported; re-save it with a newer torch`,
    );
  }
  const zip = new ZipArchive(buf, path);
  const pkl = [...zip.entries.keys()].find((k) => k.endsWith("/data.pkl") || k === "data.pkl");
  if (!pkl) throw new Error(`${path}: not a PyTorch checkpoint (no data.pkl in the archive)`);
  const prefix = pkl.slice(0, pkl.length - "data.pkl".length);
  const storages = new Map<string, Storage>();
  const resolve: GlobalResolver = (mod, name) => {
    if (mod === "collections" && name === "OrderedDict") return () => new PDict();
    if (mod === "torch._utils" && name === "_rebuild_tensor_v2") {
      return (st, off, size, stride) => rebuild(`${path}`, st, off, size, stride);
    }
    if (mod === "torch._utils" && name === "_rebuild_parameter") return (data) => data;
    // Storage classes appear (uncalled) inside persistent ids; tag the function with its name.
    if (mod === "torch" && name in STORAGES) {
      return Object.assign(() => ({ storageType: name }), { storageType: name });
    }
    if (mod === "torch" && name === "device") return (d) => ({ device: d });
    return undefined;
  };
  const persistent = (pid: unknown) => {
    const t = pid as unknown[];
    if (!Array.isArray(t) || t[0] !== "storage") {
      throw new Error(`${path}: unknown persistent id ${JSON.stringify(pid)}`);
    }
    const type = (t[1] as { storageType?: string })?.storageType;
    const key = String(t[2]);
    const info = type ? STORAGES[type] : undefined;
    if (!info) throw new Error(`${path}: unsupported storage type ${type}`);
    let s = storages.get(key);
    if (!s) {
      const bytes = zip.read(`${prefix}data/${key}`);
      const numel = Math.floor(bytes.length / info.bytes);
      s = {
        kind: info.kind,
        bytes: info.bytes,
        data: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        numel,
      };
      storages.set(key, s);
    }
    return s;
  };
  return unpickle(zip.read(pkl), resolve, persistent, path);
}

/**
 * Finds the state dict in an unpickled checkpoint (the object itself, or its "state_dict" / "model" /
 * "state_dict_ema" entry), strips a DDP "module." prefix and returns name -> host tensor.
 */
export function pthStateDict(obj: unknown, path: string): Record<string, HostTensor> {
  let d = obj;
  if (d instanceof Map && !([...d.values()].some((v) => v instanceof PthTensor))) {
    for (const k of ["state_dict", "model", "model_state_dict"]) {
      if (d.has(k)) {
        d = d.get(k);
        break;
      }
    }
  }
  if (!(d instanceof Map)) throw new Error(`${path}: no state dict found (top-level object is not a dict)`);
  const out: Record<string, HostTensor> = {};
  for (const [k, v] of d) {
    if (!(v instanceof PthTensor)) {
      throw new Error(`${path}: entry "${String(k)}" of the state dict is not a tensor`);
    }
    const name = String(k).startsWith("module.") ? String(k).slice(7) : String(k);
    out[name] = v.host;
  }
  return out;
}
