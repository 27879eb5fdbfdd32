/** hemocount count: files, folders and globs in; counts, pictures and annotations out. */
import { existsSync } from 'node:fs';
import { appendFile, readFile } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { parseThresholds } from '../core/count.js';
import { type CountDocument, failedResult, type ImageResult, roundResult, toCoco, toCsv, totals, toVoc, toYolo } from '../core/formats.js';
import { CLASSES } from '../core/types.js';
import { drawAnnotated } from '../adapters/image.js';
import { ensureDir, expandInputs, OutputGuard } from '../adapters/files.js';
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
  /** Replace existing outputs that hemocount did not write (or that were changed since). */
  overwrite?: boolean;
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
  const { files, missing, skipped } = await expandInputs(a.inputs, a.recursive);
  for (const s of skipped.filter((x) => !x.error)) log(c.dim(`note: ${s.path}: ${s.reason}`));
  const guard = new OutputGuard(new Set(files.map((f) => resolve(f.path))), a.overwrite);
  // unique output stem per input, mirroring sub-folders of a counted folder
  const usedNames = new Set<string>();
  const stems = files.map((f) => {
    let stem = stemOf(f.rel);
    for (let k = 2; usedNames.has(stem); k++) stem = `${stemOf(f.rel)}-${k}`;
    usedNames.add(stem);
    return stem;
  });
  if ([a.json, a.csv, a.coco, a.jsonl].filter((o) => o === '-').length > 1) throw new UsageError("only one output can go to stdout ('-')");
  if (a.resume && (!a.jsonl || a.jsonl === '-')) throw new UsageError('--resume needs --jsonl FILE (the results of the interrupted run)');
  // results of an interrupted run, by input path; they are not counted again
  const done = new Map<string, ImageResult>();
  if (a.resume && existsSync(a.jsonl!)) {
    const text = await readFile(a.jsonl!, 'utf8');
    if (text && !text.endsWith('\n')) await appendFile(a.jsonl!, '\n'); // end the line the kill cut short
    for (const [n, line] of text.split('\n').entries()) {
      if (!line.trim()) continue;
      try {
        const r = JSON.parse(line) as ImageResult;
        if (!r.error) done.set(resolve(r.file), r);
      } catch {
        log(c.dim(`note: ${a.jsonl}: line ${n + 1} is incomplete (the run was killed while writing it): that image is counted again`));
      }
    }
  }
  const planned = [a.json, a.csv, a.coco, a.resume ? undefined : a.jsonl].filter((o): o is string => !!o && o !== '-');
  if (a.yolo) planned.push(join(a.yolo, 'classes.txt'));
  for (const stem of stems) {
    if (a.out) planned.push(join(a.out, `${stem}.annotated.png`));
    if (a.voc) planned.push(join(a.voc, `${stem}.xml`));
    if (a.yolo) planned.push(join(a.yolo, `${stem}.txt`));
  }
  // refuse before spending minutes counting, not at the end
  for (const d of new Set(planned.map((p) => dirname(resolve(p))))) {
    try {
      await ensureDir(d);
    } catch (e) {
      throw new UsageError(`cannot write the outputs: ${(e as Error).message}`);
    }
  }
  const conflicts = (await Promise.all(planned.map((p) => guard.conflict(p)))).filter((c): c is string => !!c);
  if (conflicts.length) {
    throw new UsageError(`${conflicts.length} output(s) would replace files hemocount did not write:\n  ${conflicts.slice(0, 5).join('\n  ')}${conflicts.length > 5 ? '\n  ...' : ''}\nchoose another output, or pass --overwrite`);
  }
  const results: ImageResult[] = [...missing.map((m) => failedResult(m, 'no such file, folder or matching glob')),
    ...skipped.filter((x) => x.error).map((s) => failedResult(s.path, s.reason))];
  if (!files.length && !results.length) throw new UsageError(`no image found in ${a.inputs.join(', ')} (hemocount reads JPEG, PNG, TIFF, WebP, GIF and AVIF)`);
  if (a.jsonl && a.jsonl !== '-' && !a.resume) await guard.write(a.jsonl, '');
  const progress = new Progress(files.length, a.quiet);
  for (const [i, f] of files.entries()) {
    progress.tick(i, basename(f.path));
    const before = done.get(resolve(f.path));
    if (before) {
      results.push(before);
      continue;
    }
    let r: ImageResult;
    try {
      r = await model.count(f.path, { thresholds: th.count, review: th.review, candidates: a.candidates, scale: a.scale, tta: a.tta, maxPixels: a.maxPixels });
    } catch (e) {
      results.push(failedResult(f.path, (e as Error).message.replace(`${f.path}: `, '')));
      continue;
    }
    results.push(r);
    const stem = stems[i];
    try {
      if (a.out) await guard.write(join(a.out, `${stem}.annotated.png`), await drawAnnotated(f.path, r.detections, { meta, counts: r.counts, uncertain: r.uncertain, labels: !a.noLabels, scores: !a.noScores }));
      const counted = r.detections.filter((d) => !d.uncertain);
      // cells to review go to VOC too, marked difficult, so a reviewer sees them in LabelImg
      if (a.voc) await guard.write(join(a.voc, `${stem}.xml`), toVoc(basename(f.path), r.width, r.height, r.detections));
      if (a.yolo) await guard.write(join(a.yolo, `${stem}.txt`), toYolo(r.width, r.height, counted));
    } catch (e) {
      r.error = `writing outputs failed: ${(e as Error).message}`;
    }
    if (a.jsonl === '-') process.stdout.write(JSON.stringify(roundResult(r)) + '\n');
    else if (a.jsonl) await appendFile(a.jsonl, JSON.stringify(roundResult(r)) + '\n');
  }
  progress.done();
  if (a.jsonl && a.jsonl !== '-') await guard.adopt(a.jsonl);
  const doc: CountDocument = {
    model: model.info,
    thresholds: th.count,
    review: th.review,
    images: results.map(roundResult),
    totals: totals(results),
  };
  if (a.yolo) await guard.write(join(a.yolo, 'classes.txt'), CLASSES.join('\n') + '\n');
  if (a.coco) {
    // file names relative to the COCO file, as COCO readers (hemocount evaluate too) resolve them
    const write = (text: string) => (a.coco === '-' ? process.stdout.write(text) : guard.write(a.coco!, text));
    await write(toCoco(results.filter((r) => !r.error).map((r) => ({
      file: relative(dirname(resolve(a.coco!)), resolve(r.file)), width: r.width, height: r.height, boxes: r.detections.filter((d) => !d.uncertain),
    }))));
  }
  if (a.csv === '-') process.stdout.write(toCsv(doc));
  else if (a.csv) await guard.write(a.csv, toCsv(doc));
  const json = JSON.stringify(doc, null, 1) + '\n';
  if (a.json === '-') process.stdout.write(json);
  else if (a.json) await guard.write(a.json, json);

  const failed = results.filter((r) => r.error);
  for (const f of failed) log(`${c.red('error')} ${f.file}: ${f.error}`);
  if (!a.quiet) {
    const rows = results.filter((r) => !r.error).map((r) => [basename(r.file), ...classCols(r.counts, String), ...classCols(r.uncertain, String), `${r.scale ?? 1}x`]);
    const t = doc.totals;
    rows.push(['TOTAL', ...classCols(t.counts, String), ...classCols(t.uncertain, String), '']);
    const text = table(['image', ...CLASSES, ...CLASSES.map((k) => `${k}?`), 'scale'], rows);
    // the table goes to stdout unless stdout carries the JSON
    ([a.json, a.csv, a.coco, a.jsonl].includes('-') ? log : (s: string) => process.stdout.write(s + '\n'))(text);
    log(c.dim(`${t.images} image(s) counted, ${t.failed} failed; thresholds ${CLASSES.map((k) => `${k}=${th.count[k]}`).join(',')}; '?' = to review (score >= ${CLASSES.map((k) => th.review[k]).join('/')})`));
  }
  return failed.length ? 1 : 0;
}

export class UsageError extends Error {}
