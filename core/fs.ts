/**
 * @file File helpers shared by the writers: atomic writes (a temporary file renamed into place, so a crash
 * never leaves a half-written output).
 */

/** Writes `bytes` to `path` atomically; errors name the path. */
export async function writeFileAtomic(path: string, bytes: Uint8Array, what = "file"): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`${path}: cannot write ${what} (${(e as Error).message})`);
  }
}
