/**
 * @file Which studies to infer: one study folder (`--study DIR`, DICOM files inside), or a dataset root
 * (`--data DIR`): its `test_images/` or `train_images/` folder in the RSNA layout, or any folder whose
 * sub-folders are studies.
 */

/** One study to process: its uid (the folder name) and folder. */
export interface StudyRef {
  uid: string;
  dir: string;
}

async function isDir(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isDirectory, () => false);
}

/** The studies under `--data DIR` (sorted by uid), or the single `--study DIR`. */
export async function findStudies(o: { data?: string; study?: string }): Promise<StudyRef[]> {
  if (o.study) {
    if (!await isDir(o.study)) throw new Error(`${o.study}: no such study folder`);
    const uid = o.study.replace(/\/+$/, "").split("/").pop()!;
    return [{ uid, dir: o.study }];
  }
  if (!o.data) throw new Error("give --data DIR (a dataset) or --study DIR (one study folder)");
  if (!await isDir(o.data)) throw new Error(`${o.data}: no such folder`);
  let root = o.data;
  for (const sub of ["test_images", "train_images"]) {
    if (await isDir(`${o.data}/${sub}`)) {
      root = `${o.data}/${sub}`;
      break;
    }
  }
  const out: StudyRef[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.name.startsWith(".") || e.name.endsWith(".partial")) continue;
    if (e.isDirectory || (e.isSymlink && await isDir(`${root}/${e.name}`))) {
      out.push({ uid: e.name, dir: `${root}/${e.name}` });
    }
  }
  if (!out.length) throw new Error(`${root}: no study folders`);
  return out.sort((a, b) => (a.uid < b.uid ? -1 : 1));
}
