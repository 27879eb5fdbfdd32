/**
 * The study's documents as text (no I/O): the evaluation report in Markdown and HTML, its
 * figures as SVG, and the model-selection rule. The CLI writes them; the library can too.
 */
import { type EvalImage, type Evaluation, evaluate } from './metrics.js';
import { lineChart } from './plots.js';
import { CLASSES } from './types.js';
import { COLOURS } from './vocabulary.js';
import type { Report } from '../evaluation.js';

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(2));

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
      // every row of the sweep has the same ground truth
      hlines: [{ y: ev.classes[k].best.truth, label: 'ground truth', colour: '#000', dashed: true }],
      vlines: [{ x: rep.thresholds[k], label: `model threshold ${rep.thresholds[k].toFixed(2)}`, colour: '#c00', dashed: true }],
    });
  }
  figs['f1-vs-threshold'] = lineChart(
    CLASSES.map((k) => ({ name: k, colour: COLOURS[k], points: ev.classes[k].sweep.map((r) => [r.threshold, r.f1 ?? 0] as [number, number]) })),
    {
      title: 'F1 vs threshold',
      x: 'confidence threshold',
      y: 'F1',
      yRange: [0, 1],
      vlines: CLASSES.map((k) => ({ x: rep.thresholds[k], label: `${k} threshold`, colour: COLOURS[k], dashed: true })),
    },
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
    const f1 = validationCurve(logText);
    if (f1) figs['learning-curve-f1'] = f1;
  }
  return figs;
}

/** Figure 5: classification, regression and total loss per epoch from a train_log.jsonl. */
export function learningCurve(logText: string): string | null {
  const ep = epochRecords(logText);
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

/** Validation mean best F1 per epoch (overall and per subset), where training scored epochs (--patience). */
export function validationCurve(logText: string): string | null {
  const ep = epochRecords(logText).filter((r) => r.val_f1 !== undefined);
  if (!ep.length) return null;
  const keys = [...new Set(ep.flatMap((r) => Object.keys(r).filter((k) => k.startsWith('val_f1'))))];
  const colours = ['#000', '#d62728', '#1f77b4', '#2ca02c'];
  const series = keys.map((k, i) => ({
    name: k === 'val_f1' ? 'mean best F1' : k.slice('val_f1_'.length),
    colour: colours[i % colours.length]!,
    dashed: k !== 'val_f1',
    points: ep.filter((r) => r[k] !== undefined).map((r) => [r.epoch, r[k]] as [number, number]),
  }));
  const ys = series.flatMap((x) => x.points.map((p) => p[1]));
  // zoomed on the scores: the gains between epochs are a point or two
  const yRange: [number, number] = [Math.floor(Math.min(...ys) - 2), Math.min(100, Math.ceil(Math.max(...ys) + 2))];
  return lineChart(series, { title: 'Validation F1 per epoch', x: 'epoch', y: 'F1 [%]', yRange });
}

const epochRecords = (logText: string) =>
  logText
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === 'epoch');

/** The report in Markdown: per subset and together, at the model's thresholds; confusion; sweeps. */
export function reportMarkdown(rep: Report, parts: Record<string, Report>): string[] {
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
  return md;
}

/** The report as one HTML page with its figures inline. */
export function reportHtml(md: string[], figs: Record<string, string>): string {
  return (
    `<!doctype html><html><head><meta charset="utf-8"><title>hemocount report</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}figure{display:inline-block;margin:.5em}</style></head><body>` +
    mdToHtml(md.join('\n')) +
    '<h2>Figures</h2>' +
    Object.entries(figs)
      .map(([n, s]) => `<figure>${s}<figcaption>${n}</figcaption></figure>`)
      .join('') +
    '</body></html>\n'
  );
}

export interface Candidate {
  model: string;
  ev: Evaluation;
  parts: Record<string, Evaluation>;
}

/** Mean over classes of each class's best F1. */
export const meanBestF1 = (ev: Evaluation) => CLASSES.reduce((s, k) => s + (ev.classes[k].best.f1 ?? 0), 0) / CLASSES.length;

/**
 * The selection rule: highest mean over classes of each class's best F1 (ties: higher
 * mAP@0.5); with subsets, the mean of that over the subsets, so close-ups cannot outvote
 * full fields.
 */
export function selectionScore(r: Candidate): number {
  const parts = Object.values(r.parts);
  return scoreOfParts(parts.length ? parts : [r.ev]);
}

/** The selection rule's number for the evaluations of the subsets (or of the whole set). */
export const scoreOfParts = (parts: Evaluation[]) => parts.reduce((s, ev) => s + meanBestF1(ev), 0) / parts.length;

export function selectBest<T extends Candidate>(results: T[]): T {
  return results.reduce((b, r) =>
    selectionScore(r) > selectionScore(b) + 1e-12 || (Math.abs(selectionScore(r) - selectionScore(b)) <= 1e-12 && (r.ev.mAP50 ?? 0) > (b.ev.mAP50 ?? 0))
      ? r
      : b,
  );
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
  // the rows of the table being read; written out at the first line after it
  let rows: string[][] = [];
  const endTable = () => {
    if (!rows.length) return;
    out.push(
      '<table>' +
        rows
          .filter((r) => !r.every((x) => /^-+$/.test(x)))
          .map((r, j) => `<tr>${r.map((x) => (j ? `<td>${inline(x)}</td>` : `<th>${inline(x)}</th>`)).join('')}</tr>`)
          .join('') +
        '</table>',
    );
    rows = [];
  };
  for (const l of lines) {
    if (l.startsWith('|')) {
      rows.push(
        l
          .slice(1, -1)
          .split('|')
          .map((x) => x.trim()),
      );
      continue;
    }
    endTable();
    if (l.startsWith('#')) {
      const n = l.match(/^#+/)![0].length;
      out.push(`<h${n}>${inline(l.slice(n).trim())}</h${n}>`);
    } else if (l.trim()) out.push(`<p>${inline(l)}</p>`);
  }
  endTable();
  return out.join('\n');
}
