/** hemocount evaluate | calibrate | select | report: the paper's study, automated. */
import { COLOURS } from '../core/vocabulary.js';
import { readFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import sharp from 'sharp';
import { type ClassRow, type Criterion, type EvalImage, evaluate, PAPER_THRESHOLDS, subsets } from '../core/metrics.js';
import { lineChart } from '../core/plots.js';
import { CLASSES, type CellClass, type PerClass } from '../core/types.js';
import { loadTruth, writeAtomic } from '../adapters/files.js';
import { readMetadata, withMetadata } from '../adapters/onnx.js';
import { Model } from '../detector.js';
import { buildReport, calibrate, collect, type Report } from '../evaluation.js';
import { c, log, pct, Progress, table } from './ui.js';
import { UsageError } from './count.js';

export interface StudyArgs {
  data?: string;
  format?: 'voc' | 'yolo' | 'coco';
  model?: string;
  iou: number;
  criterion: Criterion;
  json?: string;
  quiet: boolean;
  threads?: number;
  /** Use only the images of this subset (a COCO image's 'subset' field). */
  subset?: string;
  /** Go on when some annotated images are missing or unreadable (they are listed, not scored). */
  skipMissing?: boolean;
  scale?: 'auto' | number;
  tta?: boolean;
}

async function run(model: Model, a: StudyArgs): Promise<EvalImage[]> {
  if (!a.data) throw new UsageError('--data DIR (annotated images: VOC XML, YOLO or COCO JSON) is required');
  const truth = await loadTruth(a.data, a.format);
  if (truth.problems.length)
    log(c.dim(`${truth.problems.length} annotation note(s):\n  ${truth.problems.slice(0, 10).join('\n  ')}${truth.problems.length > 10 ? '\n  ...' : ''}`));
  if (a.subset) {
    const all = truth.images.length;
    truth.images = truth.images.filter((t) => t.subset === a.subset);
    if (!truth.images.length) throw new Error(`${a.data}: no image of subset '${a.subset}' (of ${all} images)`);
  }
  if (!truth.images.length) {
    for (const b of truth.unreadable) log(`${c.red('error')} ${b}`);
    throw new Error(
      truth.unreadable.length ? `${a.data}: none of the ${truth.unreadable.length} annotated image(s) could be read` : `${a.data}: no annotated images found`,
    );
  }
  const p = new Progress(truth.images.length, a.quiet);
  const got = await collect(model, truth, (i, f) => p.tick(i, basename(f)), { scale: a.scale, tta: a.tta });
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

async function output(a: StudyArgs, doc: unknown) {
  const s = JSON.stringify(doc, null, 1) + '\n';
  if (a.json === '-') process.stdout.write(s);
  else if (a.json) await writeAtomic(a.json, s);
}

const say = (a: StudyArgs, s: string) => (a.json === '-' ? log(s) : process.stdout.write(s + '\n'));

export async function runEvaluate(a: StudyArgs): Promise<number> {
  const model = await Model.load(a.model, { threads: a.threads });
  const images = await run(model, a);
  const rep = buildReport(model, a.data!, images, a.iou, a.criterion);
  const parts = subsetReports(model, a, images);
  for (const [name, r] of Object.entries(parts)) {
    say(a, c.bold(`Subset '${name}'`));
    for (const k of CLASSES) say(a, classTable(k, r.evaluation.classes[k].sweep, r.evaluation.classes[k].best) + '\n');
  }
  if (!Object.keys(parts).length) for (const k of CLASSES) say(a, classTable(k, rep.evaluation.classes[k].sweep, rep.evaluation.classes[k].best) + '\n');
  for (const [name, r] of Object.entries(parts)) say(a, `${c.bold(`Subset '${name}'`)}: ` + summaryTable(r) + '\n');
  say(a, (Object.keys(parts).length ? `${c.bold('All subsets together')}: ` : '') + summaryTable(rep));
  await output(a, { ...rep, subsets: parts });
  return 0;
}

/** One report per subset of the evaluation set (full fields and close-ups are different tasks). */
function subsetReports(model: Model, a: StudyArgs, images: EvalImage[]): Record<string, Report> {
  return Object.fromEntries([...subsets(images)].map(([name, ims]) => [name, buildReport(model, `${a.data}#${name}`, ims, a.iou, a.criterion)]));
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

const MIN_CALIBRATION_CELLS = 10;

export async function runCalibrate(a: StudyArgs & { out?: string; minCells?: number }): Promise<number> {
  if (!a.out) throw new UsageError('calibrate: --out FILE.onnx is required (the input model is never modified)');
  const model = await Model.load(a.model, { threads: a.threads });
  const images = await run(model, a);
  // thresholds from a handful of cells are noise: refuse, and warn below a comfortable amount
  for (const k of CLASSES) {
    const n = images.reduce((s, im) => s + im.truth.filter((t) => t.label === k).length, 0);
    const min = a.minCells ?? MIN_CALIBRATION_CELLS;
    if (n < min) throw new Error(`${a.data}: only ${n} ${k} cell(s) annotated; calibration needs at least ${min} per class (--min-cells)`);
    if (n < 50) log(c.yellow(`warning: only ${n} ${k} cells annotated; thresholds from fewer than 50 cells are uncertain`));
  }
  const meta = calibrate(model.metadata, images, a.subset ? `${a.data}#${a.subset}` : a.data!, a.criterion, a.iou);
  const bytes = withMetadata(model.bytes, meta);
  readMetadata(bytes); // proves the rewritten file parses before it replaces anything
  await writeAtomic(a.out, bytes, new Set([resolve(model.path)]));
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
  log(`wrote ${a.out} (criterion ${a.criterion}, ${images.length} images of ${a.data})`);
  await output(a, meta);
  return 0;
}

export async function runSelect(a: StudyArgs & { models: string[] }): Promise<number> {
  if (a.models.length < 1) throw new UsageError('select: name the model files (.onnx) to compare');
  const results: { model: string; ev: ReturnType<typeof evaluate>; parts: Record<string, ReturnType<typeof evaluate>> }[] = [];
  for (const m of a.models) {
    const model = await Model.load(m, { threads: a.threads });
    log(`evaluating ${m}`);
    const images = await run(model, a);
    const parts = Object.fromEntries([...subsets(images)].map(([n, ims]) => [n, evaluate(ims, { iou: a.iou, criterion: a.criterion })]));
    results.push({ model: m, ev: evaluate(images, { iou: a.iou, criterion: a.criterion }), parts });
    await model.release();
  }
  const names = results.map((r) => basename(r.model, '.onnx'));
  CLASSES.forEach((k, i) => {
    say(
      a,
      `Table ${i + 1}. ${k} F1-Score [%]\n` +
        table(
          ['Threshold', ...names],
          PAPER_THRESHOLDS.map((t, j) => [t.toFixed(2), ...results.map((r) => pct(r.ev.classes[k].sweep[j].f1))]),
        ) +
        '\n',
    );
  });
  // best model: highest mean over classes of each class's best F1 (ties: higher mAP@0.5);
  // with subsets, the mean of that over the subsets, so close-ups cannot outvote full fields
  const meanBestF1 = (ev: ReturnType<typeof evaluate>) => CLASSES.reduce((s, k) => s + (ev.classes[k].best.f1 ?? 0), 0) / CLASSES.length;
  const score = (r: (typeof results)[number]) => {
    const parts = Object.values(r.parts);
    return parts.length ? parts.reduce((s, ev) => s + meanBestF1(ev), 0) / parts.length : meanBestF1(r.ev);
  };
  const partNames = Object.keys(results[0].parts);
  const best = results.reduce((b, r) =>
    score(r) > score(b) + 1e-12 || (Math.abs(score(r) - score(b)) <= 1e-12 && (r.ev.mAP50 ?? 0) > (b.ev.mAP50 ?? 0)) ? r : b,
  );
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
  await output(a, { best: best.model, models: results.map((r) => ({ model: r.model, meanBestF1: score(r), evaluation: r.ev, subsets: r.parts })) });
  return 0;
}

/** The report's figures as SVG: name -> svg. */
export function reportFigures(rep: Report, images: EvalImage[], logText?: string): Record<string, string> {
  const figs: Record<string, string> = {};
  const fine = Array.from({ length: 91 }, (_, i) => Math.round((0.05 + i * 0.01) * 100) / 100);
  const ev = evaluate(images, { iou: rep.evaluation.iou, thresholds: fine });
  for (const k of CLASSES) {
    const sw = ev.classes[k].sweep;
    figs[`count-vs-threshold-${k}`] = lineChart([{ name: 'counted', colour: COLOURS[k], points: sw.map((r) => [r.threshold, r.counted]) }], {
      title: `Number of detected ${k} vs threshold`,
      x: 'confidence threshold',
      y: 'cells',
      hlines: [{ y: sw[0].truth, label: 'ground truth', colour: '#000', dashed: true }],
    });
  }
  figs['f1-vs-threshold'] = lineChart(
    CLASSES.map((k) => ({ name: k, colour: COLOURS[k], points: ev.classes[k].sweep.map((r) => [r.threshold, r.f1 ?? 0] as [number, number]) })),
    { title: 'F1 vs threshold', x: 'confidence threshold', y: 'F1', yRange: [0, 1] },
  );
  figs['precision-recall'] = lineChart(
    CLASSES.map((k) => ({
      name: k,
      colour: COLOURS[k],
      points: ev.classes[k].sweep.filter((r) => r.precision !== null).map((r) => [r.recall ?? 0, r.precision!] as [number, number]),
    })),
    { title: 'Precision-recall (thresholds 0.05-0.95)', x: 'recall', y: 'precision', xRange: [0, 1], yRange: [0, 1] },
  );
  for (const k of CLASSES) {
    const ba = rep.agreement[k].blandAltman;
    figs[`bland-altman-${k}`] = lineChart([{ name: 'images', colour: COLOURS[k], points: ba.points.map((p) => [p.mean, p.diff]), dots: true }], {
      title: `Bland-Altman: ${k} per image`,
      x: 'mean of expert and hemocount counts',
      y: 'hemocount - expert',
      hlines: [
        { y: ba.bias, label: `bias ${ba.bias.toFixed(2)}`, colour: '#000' },
        { y: ba.upper, label: `+1.96 SD ${ba.upper.toFixed(2)}`, colour: '#888', dashed: true },
        { y: ba.lower, label: `-1.96 SD ${ba.lower.toFixed(2)}`, colour: '#888', dashed: true },
      ],
    });
  }
  if (logText) {
    const lc = learningCurve(logText);
    if (lc) figs['learning-curve'] = lc;
  }
  return figs;
}

/** Figure 5: classification, regression and total loss per epoch from a train_log.jsonl. */
export function learningCurve(logText: string): string | null {
  const ep = logText
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === 'epoch');
  if (!ep.length) return null;
  const s = (key: string, name: string, colour: string, dashed = false) => ({
    name,
    colour,
    dashed,
    points: ep.filter((r) => r[key] !== undefined).map((r) => [r.epoch, r[key]] as [number, number]),
  });
  const series = [s('loss', 'total', '#000'), s('loss_cls', 'classification', '#d62728'), s('loss_box', 'regression', '#1f77b4')];
  if (ep.some((r) => r.val_loss !== undefined)) series.push(s('val_loss', 'validation total', '#555', true));
  return lineChart(series, { title: 'Learning curve', x: 'epoch', y: 'loss' });
}

export async function runReport(a: StudyArgs & { out?: string; log?: string }): Promise<number> {
  if (!a.out) throw new UsageError('report: --out report.html is required');
  const model = await Model.load(a.model, { threads: a.threads });
  const images = await run(model, a);
  const rep = buildReport(model, a.data!, images, a.iou, a.criterion);
  const parts = subsetReports(model, a, images);
  const logText = a.log ? await readFile(a.log, 'utf8') : undefined;
  const figs = reportFigures(rep, images, logText);
  const out = a.out.replace(/\.html?$/, '');
  const md: string[] = [
    `# hemocount evaluation report`,
    '',
    `Model **${rep.model.name}** ${rep.model.version} (sha256 ${rep.model.sha256.slice(0, 12)}), data \`${rep.data}\`, ${rep.evaluation.images} images, IoU ${rep.evaluation.iou}.`,
    '',
  ];
  const mdRow = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  const atModel = (title: string, r0: Report) => {
    md.push(
      `## ${title}`,
      '',
      mdRow([
        'class',
        'threshold',
        'precision',
        'recall',
        'F1',
        'count accuracy',
        'AP@0.5',
        'AP@0.5:0.95',
        'counted',
        'ground truth',
        'Pearson r',
        'Bland-Altman bias [LoA]',
      ]),
      mdRow(Array(12).fill('---')),
    );
    for (const k of CLASSES) {
      const r = r0.atModel[k];
      const e = r0.evaluation.classes[k];
      const ag = r0.agreement[k];
      md.push(
        mdRow([
          k,
          r0.thresholds[k].toFixed(2),
          pct(r.precision),
          pct(r.recall),
          pct(r.f1),
          pct(r.accuracy),
          pct(e.ap50),
          pct(e.ap5095),
          r.counted,
          r.truth,
          ag.pearson === null ? '-' : ag.pearson.toFixed(3),
          `${ag.blandAltman.bias.toFixed(2)} [${ag.blandAltman.lower.toFixed(2)}, ${ag.blandAltman.upper.toFixed(2)}]`,
        ]),
      );
    }
    md.push('', `${r0.evaluation.images} images; mAP@0.5 ${pct(r0.evaluation.mAP50)} %, mAP@0.5:0.95 ${pct(r0.evaluation.mAP5095)} %`, '');
  };
  for (const [name, r0] of Object.entries(parts)) atModel(`Subset '${name}' at the model thresholds`, r0);
  atModel(Object.keys(parts).length ? 'All subsets together at the model thresholds' : 'At the model thresholds', rep);
  md.push(
    '## Confusion matrix (rows: ground truth, columns: detections at the model thresholds)',
    '',
    mdRow(['', ...CLASSES, 'background']),
    mdRow(Array(5).fill('---')),
  );
  for (const t of [...CLASSES, 'background'] as const) md.push(mdRow([t, ...[...CLASSES, 'background' as const].map((p) => rep.confusion[t][p])]));
  for (const k of CLASSES) {
    md.push(
      '',
      `## ${k}: threshold sweep`,
      '',
      mdRow(['Threshold', 'Accuracy [%]', 'Precision [%]', 'Recall [%]', 'F1-Score [%]', 'Counted', 'Ground truth']),
      mdRow(Array(7).fill('---')),
    );
    const best = rep.evaluation.classes[k].best;
    for (const r of rep.evaluation.classes[k].sweep)
      md.push(
        mdRow([
          (r === best ? '**' : '') + r.threshold.toFixed(2) + (r === best ? '**' : ''),
          pct(r.accuracy),
          pct(r.precision),
          pct(r.recall),
          pct(r.f1),
          r.counted,
          r.truth,
        ]),
      );
  }
  const mdFigs: string[] = ['', '## Figures', ''];
  for (const [name, svg] of Object.entries(figs)) {
    await writeAtomic(`${out}-${name}.svg`, svg);
    await writeAtomic(`${out}-${name}.png`, await sharp(Buffer.from(svg)).png().toBuffer());
    mdFigs.push(`![${name}](${basename(out)}-${name}.svg)`);
  }
  await writeAtomic(`${out}.md`, [...md, ...mdFigs].join('\n') + '\n');
  const html =
    `<!doctype html><html><head><meta charset="utf-8"><title>hemocount report</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}figure{display:inline-block;margin:.5em}</style></head><body>` +
    mdToHtml(md.join('\n')) +
    '<h2>Figures</h2>' +
    Object.entries(figs)
      .map(([n, s]) => `<figure>${s}<figcaption>${n}</figcaption></figure>`)
      .join('') +
    '</body></html>\n';
  await writeAtomic(`${out}.html`, html);
  log(`wrote ${out}.html, ${out}.md and ${Object.keys(figs).length} figures (SVG + PNG)`);
  for (const [name, r] of Object.entries(parts)) say(a, `Subset '${name}': ` + summaryTable(r) + '\n');
  say(a, summaryTable(rep));
  await output(a, { ...rep, subsets: parts });
  return 0;
}

/** Just enough Markdown for the report: headings, paragraphs, pipe tables, bold. */
function mdToHtml(md: string): string {
  const out: string[] = [];
  const lines = md.split('\n');
  const inline = (s: string) =>
    s
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/\*\*(.+?)\*\*/g, '<b>$1</b>')
      .replace(/`(.+?)`/g, '<code>$1</code>');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith('#')) {
      const n = l.match(/^#+/)![0].length;
      out.push(`<h${n}>${inline(l.slice(n).trim())}</h${n}>`);
    } else if (l.startsWith('|')) {
      const rows: string[][] = [];
      while (i < lines.length && lines[i].startsWith('|'))
        rows.push(
          lines[i++]
            .slice(1, -1)
            .split('|')
            .map((x) => x.trim()),
        );
      i--;
      out.push(
        '<table>' +
          rows
            .filter((r) => !r.every((x) => /^-+$/.test(x)))
            .map((r, j) => `<tr>${r.map((x) => (j ? `<td>${inline(x)}</td>` : `<th>${inline(x)}</th>`)).join('')}</tr>`)
            .join('') +
          '</table>',
      );
    } else if (l.trim()) out.push(`<p>${inline(l)}</p>`);
  }
  return out.join('\n');
}
