/** Files: expanding inputs, atomic writes that never touch an input, ground-truth folders. */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, stat, writeFile, mkdir, unlink } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { parseCoco, parseCsv, parseVoc, parseYolo } from '../core/formats.js';
import type { GroundTruthBox } from '../core/metrics.js';
import type { CellClass } from '../core/types.js';
import { rbcCountProblem } from '../core/samples.js';
import { IMAGE_EXTENSIONS } from '../core/vocabulary.js';
import { probe } from './image.js';

const isImageName = (p: string) => IMAGE_EXTENSIONS.includes(extname(p).toLowerCase());

export interface InputFile {
  path: string;
  /** Path relative to the folder it was found in (to mirror folder layout in outputs). */
  rel: string;
  /** Found in a sub-folder of a named folder: that sub-folder's name (one sample = one smear). */
  sample?: string;
}

/** What a folder walk could not use: unreadable folders (errors) and special files (notes). */
export interface Skipped {
  path: string;
  reason: string;
  /** true: something the user asked for could not be read; false: skipped by design. */
  error: boolean;
}

const kindOf = (st: { isFIFO(): boolean; isSocket(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean }) =>
  st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : st.isBlockDevice() || st.isCharacterDevice() ? 'a device' : 'not a regular file';

async function walk(dir: string, recursive: boolean, out: string[], skipped: Skipped[]): Promise<void> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    skipped.push({ path: dir, reason: `cannot read this folder (${code === 'EACCES' ? 'permission denied' : (e as Error).message})`, error: true });
    return;
  }
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    const st = e.isSymbolicLink() ? await stat(p).catch(() => null) : e;
    if (!st) {
      skipped.push({ path: p, reason: 'broken symbolic link', error: true });
      continue;
    }
    if (st.isDirectory()) {
      if (recursive) await walk(p, recursive, out, skipped);
    } else if (!isImageName(e.name) || /\.annotated\.(png|jpg|webp)$/.test(e.name)) {
    } else if (st.isFile()) out.push(p);
    else skipped.push({ path: p, reason: `${kindOf(st)}, not an image file: skipped`, error: false }); // reading it would block
  }
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob.charAt(i);
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
      if (glob[i + 1] === '/') i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if ('\\^$+.()|{}[]'.includes(c)) re += '\\' + c;
    else re += c;
  }
  return new RegExp(`^${re}$`);
}

/**
 * Files, folders (images inside, recursively unless told not to) and globs (*, **, ?).
 * A named path that does not exist is returned in `missing` rather than thrown.
 */
export async function expandInputs(args: string[], recursive = true): Promise<{ files: InputFile[]; missing: string[]; skipped: Skipped[] }> {
  const files: InputFile[] = [];
  const missing: string[] = [];
  const skipped: Skipped[] = [];
  const seen = new Set<string>();
  const add = (p: string, root: string, inFolder: boolean) => {
    const abs = resolve(p);
    if (seen.has(abs)) return;
    seen.add(abs);
    const rel = relative(root, p) || basename(p);
    const parts = rel.split(sep);
    files.push({ path: p, rel, ...(inFolder && parts.length > 1 && { sample: parts[0] }) });
  };
  for (const a of args) {
    if (/[*?]/.test(a) && !existsSync(a)) {
      const fixed: string[] = [];
      for (const part of a.split('/')) {
        if (/[*?]/.test(part)) break;
        fixed.push(part);
      }
      const root = fixed.join('/') || '.';
      const re = globToRegExp(a.startsWith('./') ? a.slice(2) : a);
      const all: string[] = [];
      if (existsSync(root)) await walk(root, true, all, skipped);
      const hits = all.filter((p) => re.test(p.startsWith('./') ? p.slice(2) : p));
      if (!hits.length) missing.push(a);
      for (const p of hits) add(p, root, true);
      continue;
    }
    let st: import('node:fs').Stats;
    try {
      st = await stat(a);
    } catch {
      missing.push(a);
      continue;
    }
    if (st.isDirectory()) {
      const found: string[] = [];
      await walk(a, recursive, found, skipped);
      for (const p of found) add(p, a, true);
    } else if (st.isFile()) add(a, dirname(a), false);
    else skipped.push({ path: a, reason: `${kindOf(st)}, not an image file`, error: true });
  }
  return { files, missing, skipped };
}

export interface ManifestEntry {
  /** As written in the manifest, resolved against the manifest's folder. */
  file: string;
  sample: string;
  /** Analyser red-cell count per microlitre, when the manifest has an rbc_count column. */
  rbcCount?: number;
}

/**
 * A sample manifest: CSV with a header naming `file` and `sample` (and optionally
 * `rbc_count`). Errors name the manifest and the line.
 */
export async function readManifest(path: string): Promise<ManifestEntry[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read the sample manifest (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const rows = parseCsv(text.replace(/^\uFEFF/, '').replace(/\r\n/g, '\n')).filter((r) => r.some((f) => f.trim()));
  const head = (rows.shift() ?? []).map((h) => h.trim().toLowerCase());
  const col = (n: string) => head.indexOf(n);
  if (col('file') < 0 || col('sample') < 0)
    throw new Error(`${path}: a sample manifest needs a header line with 'file' and 'sample' columns (and optionally 'rbc_count')`);
  const out: ManifestEntry[] = [];
  const seen = new Map<string, number>();
  for (const [i, r] of rows.entries()) {
    const line = i + 2;
    const file = (r[col('file')] ?? '').trim();
    const sample = (r[col('sample')] ?? '').trim();
    if (!file || !sample) throw new Error(`${path}: line ${line}: both 'file' and 'sample' are needed`);
    const abs = resolve(dirname(path), file);
    if (seen.has(abs)) throw new Error(`${path}: line ${line}: ${file} is already listed on line ${seen.get(abs)}`);
    seen.set(abs, line);
    const rc = col('rbc_count') >= 0 ? (r[col('rbc_count')] ?? '').trim() : '';
    const rbcCount = rc ? Number(rc) : undefined;
    const why = rbcCount === undefined ? null : rbcCountProblem(rbcCount);
    if (why) throw new Error(`${path}: line ${line}: rbc_count '${rc}' ${why}`);
    out.push({ file: abs, sample, ...(rbcCount !== undefined && { rbcCount }) });
  }
  if (!out.length) throw new Error(`${path}: the sample manifest lists no image`);
  return out;
}

/**
 * The images of a run and their samples: inputs (a sub-folder of a named folder is a
 * sample), the files of a manifest (its `sample` column wins), and `sample` for images
 * that have none yet. Also the analyser red-cell counts by sample from the manifest.
 */
export async function collectInputs(o: { inputs: string[]; recursive: boolean; manifest?: string; sample?: string }) {
  const entries = o.manifest ? await readManifest(o.manifest) : [];
  const found = await expandInputs([...o.inputs, ...entries.map((e) => e.file)], o.recursive);
  const bySample = new Map(entries.map((e) => [e.file, e.sample]));
  for (const f of found.files) {
    const s = bySample.get(resolve(f.path)) ?? f.sample ?? o.sample;
    if (s !== undefined) f.sample = s;
  }
  // a listed field that is missing is a failed field of its sample, not a field of none
  const missingSample = Object.fromEntries(
    found.missing.flatMap((m) => {
      const s = bySample.get(resolve(m)) ?? o.sample;
      return s === undefined ? [] : [[m, s]];
    }),
  );
  const rbcCount: Record<string, number> = {};
  for (const e of entries) {
    if (e.rbcCount === undefined) continue;
    if (rbcCount[e.sample] !== undefined && rbcCount[e.sample] !== e.rbcCount) {
      throw new Error(`${o.manifest}: sample '${e.sample}' has two rbc_count values (${rbcCount[e.sample]} and ${e.rbcCount})`);
    }
    rbcCount[e.sample] = e.rbcCount;
  }
  return { ...found, missingSample, rbcCount };
}

/**
 * mkdir -p without Node's recursive mkdir, which spins forever where a parent refuses new
 * folders with ENOENT (e.g. under /proc).
 */
export async function ensureDir(dir: string, depth = 0): Promise<void> {
  try {
    await mkdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if (!(await stat(dir)).isDirectory()) throw new Error(`${dir}: exists and is not a folder`);
      return;
    }
    if (code === 'ENOENT' && depth < 64 && dirname(dir) !== dir) {
      await ensureDir(dirname(dir), depth + 1);
      try {
        await mkdir(dir);
        return;
      } catch (e2) {
        if ((e2 as NodeJS.ErrnoException).code === 'EEXIST') return;
        throw new Error(`${dir}: cannot create this folder (${(e2 as NodeJS.ErrnoException).code ?? (e2 as Error).message})`);
      }
    }
    throw new Error(`${dir}: cannot create this folder (${code ?? (e as Error).message})`);
  }
}

/** Write via a temporary file and rename, so a reader never sees half a file; refuses to replace an input. */
export async function writeAtomic(path: string, data: string | Uint8Array, protect: Set<string> = new Set()): Promise<void> {
  const abs = resolve(path);
  if (protect.has(abs)) throw new Error(`${path}: refusing to overwrite an input file`);
  await ensureDir(dirname(abs));
  const tmp = `${abs}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, abs);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Outputs never replace a file hemocount did not write. Each output folder keeps a ledger,
 * `.hemocount-outputs.json` (file name -> sha256 of the bytes hemocount wrote); an existing
 * file may be replaced only while its bytes are still exactly those, so an expert's
 * annotation, or one corrected in LabelImg since, is never lost. `overwrite` lifts the rule.
 */
export class OutputGuard {
  private ledgers = new Map<string, Record<string, string>>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly protect: Set<string> = new Set(),
    private readonly overwrite = false,
  ) {}

  private async ledger(dir: string, fresh = false): Promise<Record<string, string>> {
    let l = fresh ? undefined : this.ledgers.get(dir);
    if (!l) {
      l = await readFile(join(dir, LEDGER), 'utf8')
        .then((t) => JSON.parse(t) as Record<string, string>)
        .catch(() => ({}));
      this.ledgers.set(dir, l);
    }
    return l;
  }

  /** Why `path` may not be written, or null when it may. */
  async conflict(path: string): Promise<string | null> {
    const abs = resolve(path);
    if (this.protect.has(abs)) return `${path}: refusing to overwrite an input file`;
    if (this.overwrite) return null;
    const st = await stat(abs).catch(() => null);
    if (!st) return null;
    if (!st.isFile()) return `${path}: exists and is not a regular file`;
    const own = (await this.ledger(dirname(abs)))[basename(abs)];
    if (own && own === sha256(await readFile(abs))) return null;
    return `${path}: exists and was not written by hemocount${own ? ' (or was changed since)' : ''}`;
  }

  /** Record `path` as hemocount's own as it is now (a file hemocount appended to). */
  async adopt(path: string): Promise<void> {
    await this.record(path, await readFile(resolve(path)));
  }

  async write(path: string, data: string | Uint8Array): Promise<void> {
    const why = await this.conflict(path);
    if (why) throw new Error(`${why}; refusing to replace it (--overwrite to allow)`);
    await writeAtomic(path, data, this.protect);
    await this.record(path, typeof data === 'string' ? Buffer.from(data) : data);
  }

  private async record(path: string, bytes: Uint8Array): Promise<void> {
    // one ledger write at a time: images counted in parallel must not lose each other's entries
    const run = this.writing.then(async () => {
      const abs = resolve(path);
      // read again: another guard (the library's, in the same command) may have recorded a file since
      const l = await this.ledger(dirname(abs), true);
      l[basename(abs)] = sha256(bytes);
      await writeAtomic(join(dirname(abs), LEDGER), JSON.stringify(l) + '\n');
    });
    this.writing = run.catch(() => {});
    return run;
  }
}

const LEDGER = '.hemocount-outputs.json';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export interface TruthImage {
  file: string;
  truth: GroundTruthBox[];
  /** Classes not exhaustively labelled in this image (from the training split). */
  unlabelled: CellClass[];
  /** From a COCO image's 'subset' field: evaluations report each subset separately. */
  subset?: string;
  /** Cells nobody has decided (VOC difficult): detections on them are left out of the evaluation. */
  undecided?: GroundTruthBox[];
}

export interface TruthSet {
  images: TruthImage[];
  problems: string[];
  /** Images the annotations name that are missing or unreadable (path: reason). */
  unreadable: string[];
  format: 'voc' | 'yolo' | 'coco';
  /** A COCO file's subsets (its images' 'subset' fields), readable images or not. */
  subsets?: string[];
}

/** Keeps one subset of a COCO set: its images, and its unreadable ones (named so by loadTruth). */
export function pickSubset(t: TruthSet, subset: string): TruthSet {
  return { ...t, images: t.images.filter((i) => i.subset === subset), unreadable: t.unreadable.filter((u) => u.endsWith(`, subset ${subset})`)) };
}

async function findImage(dir: string, stem: string): Promise<string | null> {
  for (const ext of IMAGE_EXTENSIONS) {
    for (const e of [ext, ext.toUpperCase()]) if (existsSync(join(dir, stem + e))) return join(dir, stem + e);
  }
  return null;
}

/**
 * Ground truth from a folder or file, format auto-detected: a COCO .json, a folder of VOC
 * XML (beside the images, or annotations/ + images/, or truth/ beside the images), or YOLO
 * (labels/ + images/ with classes.txt or data.yaml).
 */
export async function loadTruth(path: string, format?: 'voc' | 'yolo' | 'coco', split?: string, yaml?: string): Promise<TruthSet> {
  const problems: string[] = [];
  // a YOLO yaml (data.yaml, coco8.yaml, ...) describes the set in the folder it lies in
  if (/\.ya?ml$/i.test(path) && (format === undefined || format === 'yolo')) {
    if (!existsSync(path)) throw new Error(`${path}: no such file`);
    return loadTruth(dirname(path), 'yolo', split, basename(path));
  }
  const st = await stat(path).catch(() => null);
  if (!st) throw new Error(`${path}: no such file or folder`);
  if (split !== undefined && st.isFile()) throw new Error(`${path}: --split picks labels/<split>/ of a YOLO set; a COCO file has subsets (--subset)`);
  if ((format === 'coco' || !format) && st.isFile() && path.endsWith('.json')) {
    const doc = parseCoco(await readFile(path, 'utf8'));
    const base = dirname(path);
    problems.push(...doc.problems.map((p) => `${path}: ${p}`));
    const unreadable = doc.images
      .filter((im) => !existsSync(resolve(base, im.file)))
      .map((im) => {
        const subset = doc.subset.get(im.file);
        return `${resolve(base, im.file)}: no such file (listed in ${path}${subset ? `, subset ${subset}` : ''})`;
      });
    return {
      format: 'coco',
      problems,
      unreadable,
      subsets: [...new Set([...doc.subset.values()])],
      images: doc.images
        .filter((im) => existsSync(resolve(base, im.file)))
        .map((im) => ({
          file: resolve(base, im.file),
          truth: im.boxes.map(({ label, box }) => ({ label, box })),
          unlabelled: doc.unlabelled.get(im.file) ?? [],
          subset: doc.subset.get(im.file),
          ...(im.undecided ? { undecided: im.undecided } : {}),
        })),
    };
  }
  if (!st.isDirectory()) throw new Error(`${path}: expected a folder of annotations or a COCO .json file`);
  const names = await readdir(path);
  const sub = (n: string) => join(path, n);
  const jsons = names.filter((n) => n.endsWith('.json'));
  if (format === 'coco' || (!format && jsons.length === 1 && !names.some((n) => n.endsWith('.xml')) && !names.includes('labels'))) {
    const [json, ...more] = jsons;
    if (json === undefined || more.length) throw new Error(`${path}: expected exactly one COCO .json file`);
    return loadTruth(sub(json), 'coco', split);
  }
  const yamlName = yaml ?? (names.includes('data.yaml') ? 'data.yaml' : undefined);
  // classes.txt beside labels/, or inside it (where `count --yolo DIR/labels` writes it)
  const yoloNames =
    yamlName ?? (names.includes('classes.txt') ? 'classes.txt' : existsSync(join(path, 'labels', 'classes.txt')) ? join('labels', 'classes.txt') : undefined);
  // the sets the yaml names (train/val/test); one whose labels are not there is named, not skipped silently
  const named = yamlName ? [...yamlSets(await readFile(sub(yamlName), 'utf8'), path)] : [];
  const missing = named.filter(([, s]) => !existsSync(s.labels));
  const sets = named.filter(([, s]) => existsSync(s.labels));
  const gone = ([k, s]: (typeof named)[number]) => `${yamlName}'s ${k} set: no labels at ${s.labels}`;
  const wanted = split === undefined ? undefined : missing.find(([k]) => k === split);
  if (wanted) throw new Error(`${path}: ${gone(wanted)}`);
  if (format === 'yolo' || (!format && (names.includes('labels') || sets.length) && yoloNames)) {
    if (!yoloNames) throw new Error(`${path}: YOLO labels need classes.txt or data.yaml for the class names`);
    const classes = parseClassNames(await readFile(sub(yoloNames), 'utf8'), yoloNames);
    const images: TruthImage[] = [];
    const unreadable: string[] = [];
    const labelDirs: [string, string][] = [];
    if (sets.length) {
      if (split !== undefined && !sets.some(([k]) => k === split)) {
        throw new Error(`${path}: ${yamlName} names no set '${split}'; its sets: ${sets.map(([k]) => k).join(', ')}`);
      }
      if (split === undefined) problems.push(...missing.map((m) => `${path}: ${gone(m)} (skipped)`));
      for (const [k, s] of sets) if (split === undefined || k === split) labelDirs.push([s.labels, s.images]);
    } else {
      const lab = sub('labels');
      const splits = (await readdir(lab, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
      if (split !== undefined && !splits.includes(split)) {
        throw new Error(`${path}: no split '${split}' (labels/${split}/); ${splits.length ? `its splits: ${splits.join(', ')}` : 'it has no splits'}`);
      }
      for (const s of splits) if (split === undefined || s === split) labelDirs.push([join(lab, s), join(path, 'images', s)]);
      if (!splits.length) labelDirs.push([lab, sub('images')]);
    }
    for (const [ld, id] of labelDirs) {
      for (const n of (await readdir(ld)).filter((x) => x.endsWith('.txt') && x !== 'classes.txt').sort()) {
        const img = await findImage(id, n.slice(0, -4));
        if (!img) {
          unreadable.push(`${join(ld, n)}: no image for this label file`);
          continue;
        }
        const size = await probe(img).catch((e: Error) => e);
        if (size instanceof Error) {
          unreadable.push(size.message);
          continue;
        }
        const { width, height } = size;
        const ann = parseYolo(await readFile(join(ld, n), 'utf8'), width, height, classes);
        problems.push(...ann.problems.map((p) => `${join(ld, n)}: ${p}`));
        images.push({ file: img, truth: ann.boxes, unlabelled: [] });
      }
    }
    return { images, problems, unreadable, format: 'yolo' };
  }
  if (split !== undefined) throw new Error(`${path}: --split picks one set of a YOLO folder (labels/<split>/, or a set its yaml names); this folder is none`);
  const xmlDir = ['annotations', 'Annotations', 'truth'].map(sub).find((d) => existsSync(d)) ?? path;
  const xmls = (await readdir(xmlDir)).filter((n) => n.endsWith('.xml')).sort();
  if (!xmls.length) throw new Error(`${path}: found no VOC XML, YOLO labels/ or COCO JSON annotations`);
  const imageDirs = [sub('images'), sub('JPEGImages'), path, xmlDir, dirname(xmlDir)].filter((d) => existsSync(d));
  const images: TruthImage[] = [];
  const unreadable: string[] = [];
  const claimed = new Map<string, string>(); // image -> the XML whose labels it has: one image, one set of labels
  for (const n of xmls) {
    const file = join(xmlDir, n);
    let ann: ReturnType<typeof parseVoc>;
    try {
      ann = parseVoc(await readFile(file, 'utf8'));
    } catch (e) {
      problems.push(`${file}: ${(e as Error).message}`);
      continue;
    }
    problems.push(...ann.problems.map((p) => `${file}: ${p}`));
    if (ann.undecided.length)
      problems.push(`${file}: ${ann.undecided.length} object(s) marked difficult (undecided): no truth, and detections on them are left out`);
    let img: string | null = null;
    // <filename> names a file beside the annotations, never a path: '../../etc/passwd' stays in the dataset
    const fname = ann.filename ? basename(ann.filename.replace(/\\/g, '/')) : undefined;
    for (const d of imageDirs) {
      if (fname && existsSync(join(d, fname))) {
        img = join(d, fname);
        break;
      }
      img = await findImage(d, n.slice(0, -4));
      if (img) break;
    }
    if (!img) {
      unreadable.push(`${file}: image '${ann.filename ?? n}' not found`);
      continue;
    }
    const entry: TruthImage = { file: img, truth: ann.boxes, unlabelled: [], ...(ann.undecided.length ? { undecided: ann.undecided } : {}) };
    const other = claimed.get(img);
    if (other !== undefined) {
      // two files labelling one image: the one named after the image wins, the other is reported
      const own = basename(img).replace(/\.[^.]+$/, '');
      const keepNew = n.slice(0, -4) === own && other.slice(0, -4) !== own;
      problems.push(`${join(xmlDir, keepNew ? other : n)}: describes ${basename(img)}, which ${keepNew ? n : other} describes too: not used`);
      if (keepNew) {
        images[images.findIndex((i) => i.file === img)] = entry;
        claimed.set(img, n);
      }
      continue;
    }
    claimed.set(img, n);
    images.push(entry);
  }
  return { images, problems, unreadable, format: 'voc' };
}

/**
 * The image folders a YOLO data.yaml names as its sets (train, val, test), resolved as
 * Ultralytics does: against its `path` (default: the yaml's folder), a leading '../' dropped
 * when that does not exist (Roboflow's exports); each set's labels are in the folder named like
 * its images with the last 'images' in the path replaced by 'labels'. Lists of folders or
 * files are not read.
 */
export function yamlSets(text: string, dir: string): Map<string, { images: string; labels: string }> {
  const value = (key: string): string | undefined => {
    const m = new RegExp(`^${key}[ \t]*:[ \t]*([^#\n]*)`, 'm').exec(text);
    const v = m?.[1]?.trim().replace(/^['"]|['"]$/g, '');
    return v && !v.startsWith('[') ? v : undefined;
  };
  const root = resolve(dir, value('path') ?? '.');
  const sets = new Map<string, { images: string; labels: string }>();
  for (const key of ['train', 'val', 'test']) {
    const v = value(key);
    if (v === undefined) continue;
    let images = resolve(root, v);
    if (!existsSync(images) && v.startsWith('../')) images = resolve(root, v.slice(3));
    const parts = images.split(sep);
    const at = parts.lastIndexOf('images');
    if (at >= 0) parts[at] = 'labels';
    sets.set(key, { images, labels: parts.join(sep) });
  }
  return sets;
}

export function parseClassNames(text: string, name: string): string[] {
  if (name.endsWith('.yaml') || name.endsWith('.yml')) {
    const [, list] = /names\s*:\s*\[([^\]]*)\]/.exec(text) ?? [];
    if (list !== undefined)
      return list
        .split(',')
        .map((s) => s.trim().replace(/^['"]|['"]$/g, ''))
        .filter(Boolean);
    const [, block] = /names\s*:\s*\n((?:[ \t]+.*\n?)+)/.exec(text) ?? [];
    if (block !== undefined)
      return block
        .split('\n')
        .map((l) =>
          l
            .replace(/^\s*(-|\d+\s*:)\s*/, '')
            .trim()
            .replace(/^['"]|['"]$/g, ''),
        )
        .filter(Boolean);
    throw new Error(`${name}: no 'names' list`);
  }
  return text
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter(Boolean);
}
