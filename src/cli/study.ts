import { readFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { type ClassRow, type Criterion, type EvalImage, evaluate, PAPER_THRESHOLDS, pairedBootstrap, subsets } from '../core/metrics.js';
import { meanBestF1, reportFigures, reportHtml, reportMarkdown, scoreOfParts, selectBest, selectionScore } from '../core/report.js';
import { CLASSES, type CellClass, type PerClass } from '../core/types.js';
import { loadTruth, OutputGuard, pickSubset } from '../adapters/files.js';
import { svgToPng } from '../adapters/image.js';
import { Model } from '../detector.js';
import { buildReport, calibrateToFile, collect, type Report } from '../evaluation.js';
import { c, log, pct, Progress, signed, table } from './ui.js';
import { preflight, UsageError } from './count.js';

export interface StudyArgs {
  data?: string;
  format?: 'voc' | 'yolo' | 'coco';
  model?: string;
  iou: number;
  criterion: Criterion;
  json?: string;
  quiet: boolean;
  threads?: number;
  /** YOLO: use only labels/<split>/ (e.g. val of a data.yaml set). */
  split?: string;
  /** Use only the images of this subset (a COCO image's 'subset' field). */
  subset?: string;
  /** Go on when some annotated images are missing or unreadable (they are listed, not scored). */
  skipMissing?: boolean;
  scale?: 'auto' | number;
  tta?: boolean;
  whiteBalance?: boolean;
  /** Replace outputs that hemocount did not write (as for count). */
  overwrite?: boolean;
}

/** Outputs follow count's rule: checked before the (long) evaluation, never replacing a file hemocount did not write. */
async function guarded(a: StudyArgs, planned: (string | undefined)[], protect: string[] = []): Promise<OutputGuard> {
  const guard = new OutputGuard(new Set(protect.map((p) => resolve(p))), a.overwrite);
  await preflight(
    guard,
    planned.filter((p): p is string => !!p && p !== '-'),
  );
  return guard;
}

/** Scores on a model's own training images say how it fits them, not how it counts new smears. */
function trainedOn(model: Model, a: StudyArgs): boolean {
  const cfg = (model.metadata.provenance as { config?: { data?: string | null; split?: string | null } } | undefined)?.config;
  return !!cfg?.data && resolve(a.data!) === resolve(cfg.data) && (!a.split || !cfg.split || a.split === cfg.split);
}

async function run(model: Model, a: StudyArgs): Promise<EvalImage[]> {
  if (!a.data) throw new UsageError('--data DIR (annotated images: VOC XML, YOLO or COCO JSON) is required');
  if (trainedOn(model, a))
    log(
      c.yellow(
        `warning: ${dataLabel(a)} is what this model was trained on: its scores there say how well it fits those images, not how it counts new smears (use images it never saw)`,
      ),
    );
  let truth = await loadTruth(a.data, a.format, a.split);
  if (truth.problems.length)
    log(c.dim(`${truth.problems.length} annotation note(s):\n  ${truth.problems.slice(0, 10).join('\n  ')}${truth.problems.length > 10 ? '\n  ...' : ''}`));
  if (a.subset) {
    const known = truth.subsets ?? [];
    if (!known.includes(a.subset))
      throw new UsageError(
        `--subset ${a.subset}: ${a.data} ${known.length ? `has the subsets ${known.join(', ')}` : "has no subsets (a COCO file's images can name one)"}`,
      );
    truth = pickSubset(truth, a.subset);
  }
  if (!truth.images.length) {
    for (const b of truth.unreadable) log(`${c.red('error')} ${b}`);
    const missing = truth.unreadable.filter((u) => u.includes(': no such file')).length;
    throw new Error(
      truth.unreadable.length
        ? `${a.data}: none of the ${truth.unreadable.length} annotated image(s)${a.subset ? ` of subset '${a.subset}'` : ''} could be read${missing ? ` (${missing} missing: are the images where ${basename(a.data)} says? Its paths are relative to its folder)` : ''}`
        : `${a.data}: no annotated images found`,
    );
  }
  const p = new Progress(truth.images.length, a.quiet);
  const got = await collect(model, truth, (i, f) => p.tick(i, basename(f)), { scale: a.scale, tta: a.tta, whiteBalance: a.whiteBalance }, a.iou);
  p.done();
  const bad = [...truth.unreadable, ...got.failed.map((f) => `${f.file}: ${f.error}`)];
  for (const b of bad) log(`${c.red('error')} ${b}`);
  if (!got.images.length) throw new Error(`${a.data}: none of the ${bad.length} annotated image(s) could be read`);
  if (bad.length && !a.skipMissing) {
    throw new Error(
      `${a.data}: ${bad.length} of ${bad.length + got.images.length} annotated image(s) could not be read (listed above); ` +
        'a score without them would not be the score of this set. Fix the paths, or pass --skip-missing to score the rest',
    );
  }
  log(c.dim(`${got.images.length} image(s) (${truth.format}) in ${(got.ms / 1000).toFixed(1)} s`));
  return got.images;
}

/** The data as reports and a calibrated model's metadata name it: the path, and the YOLO set when one was picked. */
const dataLabel = (a: { data?: string; split?: string }) => `${a.data}${a.split ? ` (set ${a.split})` : ''}`;

/** The paper's Tables 4-10 layout for one class, best row marked. */
export function classTable(cls: CellClass, rows: ClassRow[], best: ClassRow): string {
  return (
    `${c.bold(cls)}\n` +
    table(
      ['', 'Threshold', 'Accuracy [%]', 'Precision [%]', 'Recall [%]', 'F1-Score [%]', 'Counted', 'Ground truth'],
      rows.map((r) => [r === best ? '*' : '', r.threshold.toFixed(2), pct(r.accuracy), pct(r.precision), pct(r.recall), pct(r.f1), r.counted, r.truth]),
    )
  );
}

async function output(a: StudyArgs, doc: unknown, guard: OutputGuard) {
  const s = JSON.stringify(doc, null, 1) + '\n';
  if (a.json === '-') process.stdout.write(s);
  else if (a.json) await guard.write(a.json, s);
}

const say = (a: StudyArgs, s: string) => (a.json === '-' ? log(s) : process.stdout.write(s + '\n'));

export async function runEvaluate(a: StudyArgs): Promise<number> {
  const guard = await guarded(a, [a.json]);
  const model = await Model.load(a.model, { threads: a.threads });
  const images = await run(model, a);
  const rep = buildReport(model, dataLabel(a), images, a.iou, a.criterion);
  const parts = subsetReports(model, a, images);
  for (const [name, r] of Object.entries(parts)) {
    say(a, c.bold(`Subset '${name}'`));
    for (const k of CLASSES) say(a, classTable(k, r.evaluation.classes[k].sweep, r.evaluation.classes[k].best) + '\n');
  }
  if (!Object.keys(parts).length) for (const k of CLASSES) say(a, classTable(k, rep.evaluation.classes[k].sweep, rep.evaluation.classes[k].best) + '\n');
  say(
    a,
    c.dim(
      `Accuracy is count accuracy, min(counted, truth) / max(counted, truth) over all the images together (errors of opposite sign in different images cancel); * marks the best threshold by ${a.criterion === 'accuracy' ? 'count accuracy' : 'F1'}.\n`,
    ),
  );
  for (const [name, r] of Object.entries(parts)) say(a, `${c.bold(`Subset '${name}'`)}: ` + summaryTable(r) + '\n');
  say(a, (Object.keys(parts).length ? `${c.bold('All subsets together')}: ` : '') + summaryTable(rep));
  await output(a, { ...rep, subsets: parts }, guard);
  return 0;
}

/** One report per subset of the evaluation set (full fields and close-ups are different tasks). */
function subsetReports(model: Model, a: StudyArgs, images: EvalImage[]): Record<string, Report> {
  return Object.fromEntries([...subsets(images)].map(([name, ims]) => [name, buildReport(model, `${dataLabel(a)}#${name}`, ims, a.iou, a.criterion)]));
}

export function summaryTable(rep: Report): string {
  return (
    `At the model's thresholds (IoU ${rep.evaluation.iou}), ${rep.evaluation.images} images:\n` +
    table(
      ['class', 'threshold', 'precision', 'recall', 'F1', 'count acc.', 'AP@0.5', 'AP@.5:.95', 'counted', 'truth'],
      CLASSES.map((k) => {
        const r = rep.atModel[k];
        const e = rep.evaluation.classes[k];
        return [k, rep.thresholds[k].toFixed(2), pct(r.precision), pct(r.recall), pct(r.f1), pct(r.accuracy), pct(e.ap50), pct(e.ap5095), r.counted, r.truth];
      }),
    ) +
    `\nmAP@0.5 ${pct(rep.evaluation.mAP50)}   mAP@0.5:0.95 ${pct(rep.evaluation.mAP5095)}\n` +
    table(
      ['errors', 'missed', 'at border', 'false', 'duplicate', 'loose (IoU .3-.5)', 'other class', 'far'],
      CLASSES.map((k) => {
        const e = rep.errors[k];
        return [k, e.missed, e.missedAtBorder, e.false, e.falseDuplicate, e.falseLoose, e.falseWrongClass, e.falseFar];
      }),
    )
  );
}

export async function runCalibrate(a: StudyArgs & { out?: string; minCells?: number }): Promise<number> {
  if (!a.out) throw new UsageError('calibrate: --out FILE.onnx is required (the input model is never modified)');
  const model = await Model.load(a.model, { threads: a.threads });
  if (resolve(a.out) === resolve(model.path)) throw new UsageError(`calibrate: --out ${a.out} is the input model, which is never modified`);
  const guard = await guarded(a, [a.out, a.json], [model.path]);
  const images = await run(model, a);
  // thresholds from a handful of cells are noise: refused, and warned about below 50
  const meta = await calibrateToFile(model, images, {
    out: a.out,
    data: a.subset ? `${dataLabel(a)}#${a.subset}` : dataLabel(a),
    criterion: a.criterion,
    iou: a.iou,
    minCells: a.minCells,
    overwrite: a.overwrite,
    warn: (m) => log(c.yellow(`warning: ${m}`)),
    whiteBalance: a.whiteBalance,
  });
  say(
    a,
    table(
      ['class', 'threshold', 'review from', 'precision', 'recall', 'F1', 'count acc.'],
      CLASSES.map((k) => {
        const r = (meta.calibration as { classes: PerClass<{ precision: number; recall: number; f1: number; accuracy: number }> }).classes[k];
        return [k, meta.thresholds[k].toFixed(2), meta.review[k].toFixed(2), pct(r.precision), pct(r.recall), pct(r.f1), pct(r.accuracy)];
      }),
    ),
  );
  const parts = (
    meta.calibration as { subsets: Record<string, { images: number; classes: PerClass<{ precision: number; recall: number; f1: number; accuracy: number }> }> }
  ).subsets;
  for (const [name, p] of Object.entries(parts)) {
    say(
      a,
      `\nSubset '${name}' (${p.images} images) at these thresholds:\n` +
        table(
          ['class', 'precision', 'recall', 'F1', 'count acc.'],
          CLASSES.map((k) => [k, pct(p.classes[k].precision), pct(p.classes[k].recall), pct(p.classes[k].f1), pct(p.classes[k].accuracy)]),
        ),
    );
  }
  log(`wrote ${a.out} (criterion ${a.criterion}, ${images.length} images of ${dataLabel(a)})`);
  await output(a, meta, guard);
  return 0;
}

export async function runSelect(a: StudyArgs & { models: string[] }): Promise<number> {
  if (a.models.length < 1) throw new UsageError('select: name the model files (.onnx) to compare');
  const guard = await guarded(a, [a.json], a.models);
  const results: { model: string; images: EvalImage[]; ev: ReturnType<typeof evaluate>; parts: Record<string, ReturnType<typeof evaluate>> }[] = [];
  for (const m of a.models) {
    const model = await Model.load(m, { threads: a.threads });
    log(`evaluating ${m}`);
    const images = await run(model, a);
    const parts = Object.fromEntries([...subsets(images)].map(([n, ims]) => [n, evaluate(ims, { iou: a.iou, criterion: a.criterion })]));
    results.push({ model: m, images, ev: evaluate(images, { iou: a.iou, criterion: a.criterion }), parts });
    await model.release();
  }
  const names = results.map((r) => basename(r.model, '.onnx'));
  CLASSES.forEach((k, i) => {
    say(
      a,
      `Table ${i + 1}. ${k} F1-Score [%]\n` +
        table(
          ['Threshold', ...names],
          PAPER_THRESHOLDS.map((t, j) => [t.toFixed(2), ...results.map((r) => pct(r.ev.classes[k].sweep[j]?.f1))]),
        ) +
        '\n',
    );
  });
  const partNames = Object.keys(results[0]!.parts); // one result per model, and there is at least one
  const best = selectBest(results);
  const score = selectionScore;
  say(
    a,
    table(
      ['model', 'mean best F1', ...partNames.map((n) => `${n} mean best F1`), 'mAP@0.5', ...CLASSES.map((k) => `${k} best t`)],
      results.map((r) => [
        basename(r.model),
        pct(score(r)),
        ...partNames.map((n) => pct(r.parts[n] ? meanBestF1(r.parts[n]) : null)),
        pct(r.ev.mAP50),
        ...CLASSES.map((k) => r.ev.classes[k].best.threshold.toFixed(2)),
      ]),
    ),
  );
  say(a, `best model: ${best.model}`);
  // how much of each gap a validation set this size can tell from chance
  const gaps = new Map(
    results
      .filter((r) => r !== best)
      .map((r) => {
        // an image one model could not read is left out of both
        const byFile = new Map(r.images.map((im) => [im.file, im]));
        const shared = best.images.filter((im) => byFile.has(im.file));
        return [
          r.model,
          pairedBootstrap(
            shared,
            shared.map((im) => byFile.get(im.file)!),
            scoreOfParts,
            { iou: a.iou, criterion: a.criterion },
          ),
        ] as const;
      }),
  );
  if (gaps.size) {
    say(
      a,
      `\nAgainst the best model (paired bootstrap over images, ${[...gaps.values()][0]!.rounds} resamples${partNames.length ? ' within each subset' : ''}: this model's mean best F1 minus the best's, and its 95 % interval;\nan interval that holds 0 is a gap this validation set cannot tell from chance):\n` +
        table(
          ['model', 'difference', '95 % interval'],
          [...gaps].map(([m, g]) => [basename(m), signed(g.diff), `${signed(g.low)} .. ${signed(g.high)}`]),
        ),
    );
  }
  await output(
    a,
    {
      best: best.model,
      models: results.map((r) => ({
        model: r.model,
        meanBestF1: score(r),
        subsetMeanBestF1: Object.fromEntries(partNames.map((n) => [n, r.parts[n] ? meanBestF1(r.parts[n]) : null])),
        evaluation: r.ev,
        subsets: r.parts,
        ...(gaps.has(r.model) && { againstBest: gaps.get(r.model) }),
      })),
    },
    guard,
  );
  return 0;
}

export async function runReport(a: StudyArgs & { out?: string; log?: string }): Promise<number> {
  if (!a.out) throw new UsageError('report: --out report.html is required');
  const out = a.out.replace(/\.html?$/, '');
  const guard = await guarded(a, [`${out}.html`, `${out}.md`, a.json]);
  const model = await Model.load(a.model, { threads: a.threads });
  const images = await run(model, a);
  const rep = buildReport(model, dataLabel(a), images, a.iou, a.criterion);
  const parts = subsetReports(model, a, images);
  const logText = a.log ? await readFile(a.log, 'utf8') : undefined;
  const figs = reportFigures(rep, images, logText);
  // the figures' names are known now: all of them checked before any is written
  await preflight(
    guard,
    Object.keys(figs).flatMap((name) => [`${out}-${name}.svg`, `${out}-${name}.png`]),
  );
  const md = reportMarkdown(rep, parts);
  const mdFigs: string[] = ['', '## Figures', ''];
  for (const [name, svg] of Object.entries(figs)) {
    await guard.write(`${out}-${name}.svg`, svg);
    await guard.write(`${out}-${name}.png`, await svgToPng(svg));
    mdFigs.push(`![${name}](${basename(out)}-${name}.svg)`);
  }
  await guard.write(`${out}.md`, [...md, ...mdFigs].join('\n') + '\n');
  const html = reportHtml(md, figs);
  await guard.write(`${out}.html`, html);
  log(`wrote ${out}.html, ${out}.md and ${Object.keys(figs).length} figures (SVG + PNG)`);
  for (const [name, r] of Object.entries(parts)) say(a, `Subset '${name}': ` + summaryTable(r) + '\n');
  say(a, summaryTable(rep));
  await output(a, { ...rep, subsets: parts }, guard);
  return 0;
}
