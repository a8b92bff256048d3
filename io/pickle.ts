/**
 * @file A restricted unpickler for the subset of pickle that `torch.save` writes for state dicts. It builds
 * plain data (dicts, lists, tuples, numbers, strings) and calls only whitelisted constructors, each of which
 * is implemented here: nothing from the file is ever executed. Any other global or opcode is an error that
 * names it.
 */

/** A global the file referenced, resolved by the caller's whitelist. */
export type GlobalResolver = (module: string, name: string) => ((...args: unknown[]) => unknown) | undefined;

/** Persistent-id loader (torch storages). */
export type PersistentLoader = (pid: unknown) => unknown;

/** Marker object for pickle's MARK. */
const MARK = Symbol("mark");

/** A dict as pickle builds it: insertion-ordered string/number keys. */
export class PDict extends Map<unknown, unknown> {
  /** Attributes set by BUILD (PyTorch stores a state dict's `_metadata` there). */
  attrs: unknown = null;
}

/** Unpickles `data`. */
export function unpickle(
  data: Uint8Array,
  resolve: GlobalResolver,
  persistent: PersistentLoader,
  where: string,
): unknown {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const td = new TextDecoder();
  let p = 0;
  const need = (n: number) => {
    if (p + n > data.length) throw new Error(`${where}: pickle data truncated at byte ${p}`);
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), p += 2, dv.getUint16(p - 2, true));
  const u32 = () => (need(4), p += 4, dv.getUint32(p - 4, true));
  const i32 = () => (need(4), p += 4, dv.getInt32(p - 4, true));
  const bytes = (n: number) => (need(n), p += n, data.subarray(p - n, p));
  const line = () => {
    const s = p;
    while (p < data.length && data[p] !== 10) p++;
    if (p >= data.length) throw new Error(`${where}: pickle data truncated in a text line`);
    return td.decode(data.subarray(s, p++));
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) throw new Error(`${where}: pickle MARK missing`);
    const items = stack.splice(i + 1);
    stack.pop();
    return items;
  };
  const top = () => stack[stack.length - 1];
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) throw new Error(`${where}: SETITEM(S) on a non-dict`);
    for (let i = 0; i + 1 < kv.length; i += 2) d.set(kv[i], kv[i + 1]);
  };
  const global = (mod: string, name: string) => {
    const f = resolve(mod, name);
    if (!f) {
      throw new Error(
        `${where}: the pickle references ${mod}.${name}, which is not an allowed type ` +
          `(only tensors, storages, OrderedDict and plain data are loaded; nothing from the file is executed)`,
      );
    }
    return f;
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        bytes(8);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) {
          throw new Error(`${where}: malformed pickle (stack of ${stack.length} at STOP)`);
        }
        return stack[0];
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new PDict());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(Object.freeze([]));
        break;
      case 0x74: // TUPLE
        stack.push(Object.freeze(popMark()));
        break;
      case 0x85: // TUPLE1
        stack.push(Object.freeze(stack.splice(-1)));
        break;
      case 0x86: // TUPLE2
        stack.push(Object.freeze(stack.splice(-2)));
        break;
      case 0x87: // TUPLE3
        stack.push(Object.freeze(stack.splice(-3)));
        break;
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x64: // DICT
      {
        const d = new PDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: // LONG_BINGET
      {
        const k = op === 0x68 ? u8() : u32();
        if (!memo.has(k)) throw new Error(`${where}: pickle memo ${k} missing`);
        stack.push(memo.get(k));
        break;
      }
      case 0x58: // BINUNICODE
        stack.push(td.decode(bytes(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(td.decode(bytes(u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(td.decode(bytes(Number((need(8), p += 8, dv.getBigUint64(p - 8, true))))));
        break;
      case 0x54: // BINSTRING
        stack.push(td.decode(bytes(i32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(td.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
      {
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        p += 8;
        stack.push(dv.getFloat64(p - 8, false));
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x63: // GLOBAL
      {
        const mod = line(), name = line();
        stack.push(global(mod, name));
        break;
      }
      case 0x93: // STACK_GLOBAL
      {
        const [mod, name] = stack.splice(-2) as [string, string];
        stack.push(global(mod, name));
        break;
      }
      case 0x52: // REDUCE
      {
        const [f, args] = stack.splice(-2) as [(...a: unknown[]) => unknown, unknown[]];
        if (typeof f !== "function") throw new Error(`${where}: REDUCE on a non-callable`);
        stack.push(f(...args));
        break;
      }
      case 0x81: // NEWOBJ
      {
        const [cls, args] = stack.splice(-2) as [(...a: unknown[]) => unknown, unknown[]];
        if (typeof cls !== "function") throw new Error(`${where}: NEWOBJ on a non-callable`);
        stack.push(cls(...args));
        break;
      }
      case 0x62: // BUILD: the state becomes attributes (e.g. a state dict's _metadata), never items.
      {
        const state = stack.pop();
        const obj = top();
        if (obj instanceof PDict) obj.attrs = state;
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistent(stack.pop()));
        break;
      case 0x73: // SETITEM
      {
        const [k, v] = stack.splice(-2);
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: // SETITEMS
      {
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x61: // APPEND
      {
        const v = stack.pop();
        (top() as unknown[]).push(v);
        break;
      }
      case 0x65: // APPENDS
      {
        const vs = popMark();
        (top() as unknown[]).push(...vs);
        break;
      }
      default:
        throw new Error(`${where}: unsupported pickle opcode 0x${op.toString(16)} at byte ${p - 1}`);
    }
  }
}
