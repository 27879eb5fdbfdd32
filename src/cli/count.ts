/** hemocount count: files, folders and globs in; counts, pictures and annotations out. */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { appendFile, readFile } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { type CountDocument, countDocument, failedResult, type ImageResult, roundResult, toCoco, toCsv, toSamplesCsv, toVoc, toYolo } from '../core/formats.js';
import { CLASSES } from '../core/types.js';
import { DetectorPool } from '../adapters/pool.js';
import { drawAnnotated, thumbnail } from '../adapters/image.js';
import { renderSampleReport } from '../core/sample-report.js';
import { rbcCountProblem } from '../core/samples.js';
import type { ModelMetadata, PerClass } from '../core/types.js';
import { collectInputs, ensureDir, OutputGuard } from '../adapters/files.js';
import { type Detected, lowestScore, Model } from '../detector.js';
import { c, classCols, log, Progress, samplesTable, table } from './ui.js';

export interface CountArgs {
  inputs: string[];
  model?: string;
  threshold?: string;
  review?: string;
  out?: string;
  json?: string;
  csv?: string;
  voc?: string;
  yolo?: string;
  coco?: string;
  candidates?: boolean;
  recursive: boolean;
  /** Replace existing outputs that hemocount did not write (or that were changed since). */
  overwrite?: boolean;
  /** Images in flight at once (default 1). */
  jobs?: number;
  /** Annotated pictures as PNG (default), JPEG or WebP. */
  outFormat?: 'png' | 'jpg' | 'webp';
  /** Annotated pictures without box labels, or without the probabilities in them. */
  noLabels?: boolean;
  noScores?: boolean;
  /** Refuse images above this many pixels. */
  maxPixels?: number;
  /** JSON Lines: one result per image, appended as each image finishes (a killed batch keeps its work). */
  jsonl?: string;
  /** With jsonl: skip the images already in it, and count the rest. */
  resume?: boolean;
  quiet: boolean;
  threads?: number;
  scale?: 'auto' | number;
  tta?: boolean;
  whiteBalance?: boolean;
  /** Sample manifest (CSV: file,sample[,rbc_count]). */
  samples?: string;
  /** Sample name for the images given directly (not in a sub-folder or the manifest). */
  sample?: string;
  /** Analyser red cells per microlitre: '4.8e6' (every sample) or 'A=4.8e6,B=5.1e6'. */
  rbcCount?: string;
  /** One row per sample. */
  samplesCsv?: string;
  /** Printable sample report: .html or .md. */
  sampleReport?: string;
}

/** '4.8e6' for every sample, or 'A=4.8e6,B=5.1e6'. */
export function parseRbcCount(spec: string, samples: string[]): Record<string, number> {
  const num = (t: string) => {
    const v = Number(t.trim());
    const why = rbcCountProblem(v);
    if (why) throw new UsageError(`--rbc-count: '${t.trim()}' ${why}`);
    return v;
  };
  if (!spec.includes('=')) {
    const [sample, ...others] = samples;
    if (sample === undefined) throw new UsageError('--rbc-count needs a sample: put the fields in a sub-folder, give --sample NAME, or a --samples manifest');
    if (others.length)
      throw new UsageError(
        `--rbc-count ${spec} would apply to ${samples.length} samples (${samples.slice(0, 3).join(', ')}...): give NAME=COUNT for each, or an rbc_count column in the manifest`,
      );
    return { [sample]: num(spec) };
  }
  const out: Record<string, number> = {};
  for (const part of spec.split(',')) {
    const i = part.lastIndexOf('=');
    const name = part.slice(0, i).trim();
    if (i < 0 || !samples.includes(name)) throw new UsageError(`--rbc-count: '${part}' names no sample of this run (samples: ${samples.join(', ') || 'none'})`);
    out[name] = num(part.slice(i + 1));
  }
  return out;
}

const stemOf = (rel: string) => rel.slice(0, rel.length - extname(rel).length);

export async function runCount(a: CountArgs): Promise<number> {
  if (!a.inputs.length && !a.samples) throw new UsageError('count: name at least one image, folder or glob (or --samples FILE)');
  const { files, missing, uncountable, skipped, rbcCount } = await planInputs(a);
  // --jobs N > 1: N worker threads, each with its own network session (onnxruntime-node runs a
  // pass on the calling thread, so one thread runs one pass at a time)
  // default: one worker per core (measured: 1.25x the images/s of one process on 2 cores, 1.3x
  // with pictures; docs/throughput.json)
  const jobs = Math.max(1, Math.min(a.jobs ?? availableParallelism(), files.length));
  // with worker threads the network runs there: this process needs the model's metadata only
  const model = await Model.load(a.model, { threads: a.threads, lazy: jobs > 1 });
  const meta = model.metadata;
  let th: ReturnType<Model['thresholds']>;
  try {
    th = model.thresholds(a.threshold, a.review);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const guard = new OutputGuard(new Set(files.map((f) => resolve(f.path))), a.overwrite);
  // unique output stem per input, mirroring sub-folders of a counted folder
  const usedNames = new Set<string>();
  const named = files.map((f) => {
    let stem = stemOf(f.rel);
    for (let k = 2; usedNames.has(stem); k++) stem = `${stemOf(f.rel)}-${k}`;
    usedNames.add(stem);
    return { f, stem };
  });
  if ([a.json, a.csv, a.coco, a.jsonl, a.samplesCsv, a.sampleReport].filter((o) => o === '-').length > 1)
    throw new UsageError("only one output can go to stdout ('-')");
  if (a.resume && (!a.jsonl || a.jsonl === '-')) throw new UsageError('--resume needs --jsonl FILE (the results of the interrupted run)');
  // every JSONL line names what produced it, so that a resumed run reuses only results it would have produced itself
  // white balance as it takes effect (the model's default when not given), so that a resume with or without the flag agrees
  const settings = runSettings(model.info.sha256, th, { ...a, whiteBalance: a.whiteBalance ?? model.metadata.input.white_balance === 'background' });
  // the lowest score this run reports: weaker candidates need no decoding (all of them with --candidates)
  const floor = a.candidates ? undefined : lowestScore(th);
  // results of an interrupted run, by input path; they are not counted again
  const done = new Map<string, ImageResult>();
  if (a.resume && existsSync(a.jsonl!)) {
    const text = await readFile(a.jsonl!, 'utf8');
    const lines: [number, ImageResult & { settings?: string }][] = [];
    for (const [n, line] of text.split('\n').entries()) {
      if (!line.trim()) continue;
      try {
        lines.push([n + 1, JSON.parse(line)]);
      } catch {
        log(c.dim(`note: ${a.jsonl}: line ${n + 1} is incomplete (the run was killed while writing it): that image is counted again`));
      }
    }
    // failed images are counted again anyway: only the results to be reused must match
    const other = lines.find(([, r]) => !r.error && r.settings !== settings);
    if (other)
      throw new UsageError(
        `--resume: ${a.jsonl} line ${other[0]} was counted with ${other[1].settings ?? 'settings it does not record (an older hemocount)'}, this run counts with ${settings}: resume with the same model, thresholds, review, scale, tta, white balance and --candidates, or count into another --jsonl`,
      );
    if (text && !text.endsWith('\n')) await appendFile(a.jsonl!, '\n'); // end the line the kill cut short
    for (const [, { settings: _, ...r }] of lines) if (!r.error) done.set(resolve(r.file), r);
  }
  const ext = a.outFormat ?? 'png';
  const planned = [a.json, a.csv, a.coco, a.samplesCsv, a.sampleReport, a.resume ? undefined : a.jsonl].filter((o): o is string => !!o && o !== '-');
  if (a.yolo) planned.push(join(a.yolo, 'classes.txt'));
  for (const { stem } of named) {
    if (a.out) planned.push(join(a.out, `${stem}.annotated.${ext}`));
    if (a.voc) planned.push(join(a.voc, `${stem}.xml`));
    if (a.yolo) planned.push(join(a.yolo, `${stem}.txt`));
  }
  await preflight(guard, planned);
  const results: ImageResult[] = [...uncountable];
  // nothing to count is a usage error (a mistyped path too); unreadable files are reported as results
  if (!files.length && !skipped.some((x) => x.error))
    throw new UsageError(
      missing.length
        ? `no such file, folder or matching glob: ${missing.join(', ')}`
        : `no image found in ${a.inputs.join(', ')} (hemocount reads JPEG, PNG, TIFF, WebP, GIF and AVIF)`,
    );
  if (a.jsonl && a.jsonl !== '-' && !a.resume) await guard.write(a.jsonl, '');
  const progress = new Progress(files.length, a.quiet);
  const pool = jobs > 1 ? await DetectorPool.open(a.model, { workers: jobs, threads: a.threads }) : null;
  const countOne = async ({ f, stem }: (typeof named)[number]): Promise<ImageResult> => {
    const before = done.get(resolve(f.path));
    if (before) return before;
    let r: ImageResult;
    let det: Detected;
    try {
      // with pictures, the decoded pixels are kept for drawing: the input is decoded once
      const opts = { scale: a.scale, tta: a.tta, whiteBalance: a.whiteBalance, maxPixels: a.maxPixels, keepPixels: !!a.out, floor };
      det = pool ? await pool.detect(f.path, opts) : await model.detect(f.path, opts);
      r = model.summarise(det, { thresholds: th.count, review: th.review, candidates: a.candidates }, f.path);
    } catch (e) {
      return { ...failedResult(f.path, (e as Error).message.replace(`${f.path}: `, '')), ...(f.sample !== undefined && { sample: f.sample }) };
    }
    if (f.sample !== undefined) r.sample = f.sample;
    try {
      if (a.out)
        await guard.write(
          join(a.out, `${stem}.annotated.${ext}`),
          await drawAnnotated(det.pixels ?? f.path, r.detections, {
            meta,
            counts: r.counts,
            uncertain: r.uncertain,
            labels: !a.noLabels,
            scores: !a.noScores,
            format: a.outFormat === 'jpg' ? 'jpeg' : a.outFormat,
          }),
        );
      const counted = r.detections.filter((d) => !d.uncertain);
      // cells to review go to VOC too, marked difficult, so a reviewer sees them in LabelImg
      if (a.voc) await guard.write(join(a.voc, `${stem}.xml`), toVoc(basename(f.path), r.width, r.height, r.detections));
      if (a.yolo) await guard.write(join(a.yolo, `${stem}.txt`), toYolo(r.width, r.height, counted));
    } catch (e) {
      r.error = `writing outputs failed: ${(e as Error).message}`;
    }
    const line = JSON.stringify({ ...roundResult(r), settings }) + '\n';
    if (a.jsonl === '-') process.stdout.write(line);
    else if (a.jsonl) await appendFile(a.jsonl, line);
    return r;
  };
  // two images in flight per worker, so that a worker has the next image while this one is
  // drawn and written; results keep the input order
  const perFile: ImageResult[] = new Array(files.length);
  let finished = 0;
  // one iterator shared by the lanes: each takes the next image not yet taken
  const queue = named.entries();
  const lane = async () => {
    for (const [i, one] of queue) {
      perFile[i] = await countOne(one);
      progress.tick(++finished, basename(one.f.path));
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(2 * jobs, files.length) }, lane));
  } finally {
    await pool?.close();
  }
  results.push(...perFile);
  progress.done();
  if (a.jsonl && a.jsonl !== '-') await guard.adopt(a.jsonl);
  const doc = countDocument(model.info, th, results, rbcCount);
  if (a.yolo) await guard.write(join(a.yolo, 'classes.txt'), CLASSES.join('\n') + '\n');
  if (a.coco) {
    // file names relative to the COCO file, as COCO readers (hemocount evaluate too) resolve them
    const write = (text: string) => (a.coco === '-' ? process.stdout.write(text) : guard.write(a.coco!, text));
    await write(
      toCoco(
        results
          .filter((r) => !r.error)
          .map((r) => ({
            file: relative(dirname(resolve(a.coco!)), resolve(r.file)),
            width: r.width,
            height: r.height,
            boxes: r.detections.filter((d) => !d.uncertain),
          })),
      ),
    );
  }
  await writeDocument(doc, a, guard, meta);

  const failed = report(doc, a, th);
  return failed ? 1 : 0;
}

/** What decides a count besides the image, as a JSONL line records it (compared on --resume). */
function runSettings(modelSha: string, th: ReturnType<Model['thresholds']>, a: Pick<CountArgs, 'scale' | 'tta' | 'whiteBalance' | 'candidates'>): string {
  const spec = (t: Record<string, number>) => CLASSES.map((k) => `${k}=${t[k]}`).join(',');
  return `model ${modelSha.slice(0, 12)}, thresholds ${spec(th.count)}, review ${spec(th.review)}, scale ${a.scale ?? 'auto'}, tta ${a.tta ? 'on' : 'off'}${a.whiteBalance ? ', white balance on' : ''}${a.candidates ? ', with candidates' : ''}`;
}

/** The images of a run with their samples, and the analyser red-cell counts by sample. */
export async function planInputs(a: Pick<CountArgs, 'inputs' | 'recursive' | 'samples' | 'sample' | 'rbcCount' | 'samplesCsv' | 'sampleReport'>) {
  let collected: Awaited<ReturnType<typeof collectInputs>>;
  try {
    collected = await collectInputs({ inputs: a.inputs, recursive: a.recursive, manifest: a.samples, sample: a.sample });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { files, missing, missingSample, skipped } = collected;
  // what cannot be counted, reported as results: missing inputs (with their sample) and unreadable ones
  const uncountable: ImageResult[] = [
    ...missing.map((m) => ({
      ...failedResult(m, 'no such file, folder or matching glob'),
      ...(missingSample[m] !== undefined && { sample: missingSample[m] }),
    })),
    ...skipped.filter((x) => x.error).map((s) => failedResult(s.path, s.reason)),
  ];
  const sampleNames = [...new Set(files.map((f) => f.sample).filter((s): s is string => s !== undefined))];
  const rbcCount = { ...collected.rbcCount, ...(a.rbcCount ? parseRbcCount(a.rbcCount, sampleNames) : {}) };
  if ((a.samplesCsv || a.sampleReport) && !sampleNames.length)
    throw new UsageError('--samples-csv/--sample-report: no image belongs to a sample (use sub-folders, --sample NAME or --samples FILE)');
  if (a.sampleReport && !/\.(html?|md)$/i.test(a.sampleReport)) throw new UsageError(`--sample-report: '${a.sampleReport}' must end in .html or .md`);
  for (const s of skipped.filter((x) => !x.error)) log(c.dim(`note: ${s.path}: ${s.reason}`));
  return { files, missing, uncountable, skipped, rbcCount };
}

/** Refuse before spending minutes counting, not at the end: folders made, no file replaced that hemocount did not write. */
export async function preflight(guard: OutputGuard, planned: string[]): Promise<void> {
  for (const d of new Set(planned.map((p) => dirname(resolve(p))))) {
    try {
      await ensureDir(d);
    } catch (e) {
      throw new UsageError(`cannot write the outputs: ${(e as Error).message}`);
    }
  }
  const conflicts = (await Promise.all(planned.map((p) => guard.conflict(p)))).filter((c): c is string => !!c);
  if (conflicts.length) {
    throw new UsageError(
      `${conflicts.length} output(s) would replace files hemocount did not write:\n  ${conflicts.slice(0, 5).join('\n  ')}${conflicts.length > 5 ? '\n  ...' : ''}\nchoose another output, or pass --overwrite`,
    );
  }
}

export type DocumentOutputs = Pick<CountArgs, 'json' | 'csv' | 'samplesCsv' | 'sampleReport'>;

/** The document-level outputs, the same for a local count and a queued one. */
export async function writeDocument(doc: CountDocument, a: DocumentOutputs, guard: OutputGuard, meta?: ModelMetadata): Promise<void> {
  if (a.csv === '-') process.stdout.write(toCsv(doc));
  else if (a.csv) await guard.write(a.csv, toCsv(doc));
  if (a.samplesCsv === '-') process.stdout.write(toSamplesCsv(doc.samples ?? []));
  else if (a.samplesCsv) await guard.write(a.samplesCsv, toSamplesCsv(doc.samples ?? []));
  if (a.sampleReport && meta) {
    const report = await sampleReport(doc, meta, /\.md$/i.test(a.sampleReport) ? 'md' : 'html');
    if (a.sampleReport === '-') process.stdout.write(report);
    else await guard.write(a.sampleReport, report);
  }
  const json = JSON.stringify(doc, null, 1) + '\n';
  if (a.json === '-') process.stdout.write(json);
  else if (a.json) await guard.write(a.json, json);
}

/** Failures and the table (stdout unless stdout carries a document); returns the number of failed images. */
export function report(
  doc: CountDocument,
  a: Pick<CountArgs, 'quiet' | 'json' | 'csv' | 'coco' | 'jsonl' | 'samplesCsv'>,
  th: { count: PerClass<number>; review: PerClass<number> },
): number {
  const results = doc.images;
  const failed = results.filter((r) => r.error);
  for (const f of failed) log(`${c.red('error')} ${f.file}: ${f.error}`);
  if (!a.quiet) {
    // a file's name, or its path where two images share a name (slides/A/x.jpg, slides/B/x.jpg)
    const shared = new Set(results.map((r) => basename(r.file)).filter((n, i, all) => all.indexOf(n) !== i));
    const name = (f: string) => (shared.has(basename(f)) ? relative(process.cwd(), resolve(f)) || f : basename(f));
    const rows = results
      .filter((r) => !r.error)
      .map((r) => [name(r.file), ...classCols(r.counts, String), ...classCols(r.uncertain, String), `${r.scale ?? 1}x`]);
    const t = doc.totals;
    rows.push(['TOTAL', ...classCols(t.counts, String), ...classCols(t.uncertain, String), '']);
    const text = table(['image', ...CLASSES, ...CLASSES.map((k) => `${k}?`), 'scale'], rows);
    // the table goes to stdout unless stdout carries the JSON
    ([a.json, a.csv, a.coco, a.jsonl, a.samplesCsv].includes('-') ? log : (s: string) => process.stdout.write(s + '\n'))(text);
    if (doc.samples) log(samplesTable(doc.samples));
    log(
      c.dim(
        `${t.images} image(s) counted, ${t.failed} failed; thresholds ${CLASSES.map((k) => `${k}=${th.count[k]}`).join(',')}; '?' = to review (score >= ${CLASSES.map((k) => th.review[k]).join('/')})`,
      ),
    );
  }
  return failed.length;
}

/** The sample report; HTML gets a thumbnail of every annotated field. */
export async function sampleReport(doc: CountDocument, meta: ModelMetadata, format: 'html' | 'md'): Promise<string> {
  const thumbs: Record<string, string | null> = {};
  if (format === 'html') {
    for (const im of doc.images) {
      if (im.sample !== undefined && !im.error) thumbs[im.file] = await thumbnail(im.file, im.detections, { meta, counts: im.counts, uncertain: im.uncertain });
    }
  }
  return renderSampleReport(doc, { format, thumbs, generated: new Date().toISOString() });
}

export class UsageError extends Error {}
