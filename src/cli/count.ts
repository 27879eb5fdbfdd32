/** hemocount count: files, folders and globs in; counts, pictures and annotations out. */
import { basename, extname, join, resolve } from 'node:path';
import { parseThresholds } from '../core/count.js';
import { type CountDocument, failedResult, type ImageResult, roundResult, toCoco, toCsv, totals, toVoc, toYolo } from '../core/formats.js';
import { CLASSES } from '../core/types.js';
import { drawAnnotated } from '../adapters/image.js';
import { expandInputs, writeAtomic } from '../adapters/files.js';
import { Model } from '../detector.js';
import { c, classCols, log, Progress, table } from './ui.js';

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
  quiet: boolean;
  threads?: number;
  scale?: 'auto' | number;
  tta?: boolean;
}

const stemOf = (rel: string) => rel.slice(0, rel.length - extname(rel).length);

export async function runCount(a: CountArgs): Promise<number> {
  if (!a.inputs.length) throw new UsageError('count: name at least one image, folder or glob');
  const model = await Model.load(a.model, { threads: a.threads });
  const meta = model.metadata;
  let th;
  try {
    th = model.thresholds(
      a.threshold ? parseThresholds(a.threshold, meta.thresholds) : undefined,
      a.review ? parseThresholds(a.review, meta.review ?? meta.thresholds) : undefined,
    );
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { files, missing } = await expandInputs(a.inputs, a.recursive);
  const protect = new Set(files.map((f) => resolve(f.path)));
  for (const out of [a.json, a.csv, a.coco]) {
    // refuse before spending minutes counting, not at the end
    if (out && out !== '-' && protect.has(resolve(out))) throw new UsageError(`${out}: refusing to overwrite an input file`);
  }
  const results: ImageResult[] = missing.map((m) => failedResult(m, 'no such file, folder or matching glob'));
  const progress = new Progress(files.length, a.quiet);
  const usedNames = new Set<string>();
  for (const [i, f] of files.entries()) {
    progress.tick(i, basename(f.path));
    let r: ImageResult;
    try {
      r = await model.count(f.path, { thresholds: th.count, review: th.review, candidates: a.candidates, scale: a.scale, tta: a.tta });
    } catch (e) {
      results.push(failedResult(f.path, (e as Error).message.replace(`${f.path}: `, '')));
      continue;
    }
    results.push(r);
    // unique output stem per input, mirroring sub-folders of a counted folder
    let stem = stemOf(f.rel);
    for (let k = 2; usedNames.has(stem); k++) stem = `${stemOf(f.rel)}-${k}`;
    usedNames.add(stem);
    try {
      if (a.out) await writeAtomic(join(a.out, `${stem}.annotated.png`), await drawAnnotated(f.path, r.detections, { meta, counts: r.counts, uncertain: r.uncertain }), protect);
      const counted = r.detections.filter((d) => !d.uncertain);
      if (a.voc) await writeAtomic(join(a.voc, `${stem}.xml`), toVoc(basename(f.path), r.width, r.height, counted), protect);
      if (a.yolo) await writeAtomic(join(a.yolo, `${stem}.txt`), toYolo(r.width, r.height, counted), protect);
    } catch (e) {
      r.error = `writing outputs failed: ${(e as Error).message}`;
    }
  }
  progress.done();
  const doc: CountDocument = {
    model: model.info,
    thresholds: th.count,
    review: th.review,
    images: results.map(roundResult),
    totals: totals(results),
  };
  if (a.yolo) await writeAtomic(join(a.yolo, 'classes.txt'), CLASSES.join('\n') + '\n', protect);
  if (a.coco) {
    await writeAtomic(a.coco, toCoco(results.filter((r) => !r.error).map((r) => ({
      file: r.file, width: r.width, height: r.height, boxes: r.detections.filter((d) => !d.uncertain),
    }))), protect);
  }
  if (a.csv) await writeAtomic(a.csv, toCsv(doc), protect);
  const json = JSON.stringify(doc, null, 1) + '\n';
  if (a.json === '-') process.stdout.write(json);
  else if (a.json) await writeAtomic(a.json, json, protect);

  const failed = results.filter((r) => r.error);
  for (const f of failed) log(`${c.red('error')} ${f.file}: ${f.error}`);
  if (!a.quiet) {
    const rows = results.filter((r) => !r.error).map((r) => [basename(r.file), ...classCols(r.counts, String), ...classCols(r.uncertain, String), `${r.scale ?? 1}x`]);
    const t = doc.totals;
    rows.push(['TOTAL', ...classCols(t.counts, String), ...classCols(t.uncertain, String), '']);
    const text = table(['image', ...CLASSES, ...CLASSES.map((k) => `${k}?`), 'scale'], rows);
    // the table goes to stdout unless stdout carries the JSON
    (a.json === '-' ? log : (s: string) => process.stdout.write(s + '\n'))(text);
    log(c.dim(`${t.images} image(s) counted, ${t.failed} failed; thresholds ${CLASSES.map((k) => `${k}=${th.count[k]}`).join(',')}; '?' = to review (score >= ${CLASSES.map((k) => th.review[k]).join('/')})`));
  }
  return failed.length ? 1 : 0;
}

export class UsageError extends Error {}
