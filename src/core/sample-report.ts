/**
 * The printable sample report (HTML or Markdown) from a count document: per sample, the
 * totals with intervals, per-field mean and SD, ratios, estimates, review status and the
 * fields. Text only (no I/O): thumbnails come in as data URIs.
 */
import type { CountDocument } from './formats.js';
import { ESTIMATE_METHOD, type Interval, MIN_RATIO_RBC, type RatioValue, type SampleSummary } from './samples.js';
import { CLASSES } from './types.js';

const f0 = (v: number) => (Number.isFinite(v) ? String(Math.round(v)) : 'inf');
const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : 'inf');
export const fmtInterval = (ci: Interval, f = f1) => `${f(ci[0])}-${f(ci[1])}`;
export const fmtRatio = (r: RatioValue | null, f = f1) => (r ? `${f(r.value)} (${fmtInterval(r.ci95, f)})` : 'n/a (no red cells)');
/** Per microlitre as labs write it, x10^9/L, to three significant figures (the interval is wider than that). */
const g9 = (perUl: number) => (Number.isFinite(perUl) ? String(Number((perUl / 1000).toPrecision(3))) : 'inf');
const fmtPer9 = (r: RatioValue | null) => (r ? `${g9(r.value)} x10^9/L (${g9(r.ci95[0])}-${g9(r.ci95[1])})` : 'n/a (no red cells)');
/** Adults' reference intervals, x10^9/L, for the H / L flags a lab prints beside a result. */
export const REFERENCE_X9L = { WBC: [4, 11], Platelets: [150, 450] } as const;
function flagged(c: 'WBC' | 'Platelets', r: RatioValue | null): string {
  if (!r) return fmtPer9(r);
  const [lo, hi] = REFERENCE_X9L[c];
  const v = r.value / 1000;
  // white-cell estimates far too high usually mean fields chosen for holding a white cell
  const why = c === 'WBC' && v > 3 * hi ? '; were the fields chosen for holding white cells?' : '';
  return `${fmtPer9(r)}${v > hi ? ` H (adult reference ${lo}-${hi}${why})` : v < lo ? ` L (adult reference ${lo}-${hi})` : ''}`;
}

interface Block {
  title: string;
  rows: [string, string][];
  notes: string[];
  fields: { file: string; cells: string[]; thumb?: string | null }[];
}

function blocks(doc: CountDocument): Block[] {
  const byKey = new Map(doc.images.map((i) => [`${i.sample}\u0000${i.file}`, i]));
  return (doc.samples ?? []).map((s) => {
    const reviewers = new Set<string>();
    const fields = s.images.map((file) => {
      const im = byKey.get(`${s.name}\u0000${file}`);
      if (im?.reviewed) reviewers.add(`${im.reviewed.by || 'unnamed reviewer'}, ${im.reviewed.at}`);
      const cells =
        !im || im.error
          ? ['failed', '', '', '', im?.error ?? 'not counted']
          : [
              ...CLASSES.map((c) => String(im.counts[c])),
              CLASSES.map((c) => im.uncertain[c]).join('/'),
              im.reviewed
                ? `reviewed by ${im.reviewed.by || 'unnamed'} (${im.reviewed.at})`
                : CLASSES.some((c) => im.uncertain[c])
                  ? 'to review'
                  : 'nothing to review',
            ];
      return { file, cells };
    });
    return {
      title: s.name,
      rows: sampleRows(s),
      notes: [
        `${s.fields} field(s) counted${s.failed ? `, ${s.failed} failed` : ''}; ${s.fieldsReviewed} reviewed, ${s.fieldsToReview} still hold cells to review.`,
        ...(reviewers.size ? [`Reviewed by: ${[...reviewers].join('; ')}.`] : []),
      ],
      fields,
    };
  });
}

/** The summary lines of one sample (also the CLI's printout). */
export function sampleRows(s: SampleSummary): [string, string][] {
  const rows: [string, string][] = CLASSES.map((c) => [
    `${c} total (95 % CI)`,
    `${s.counts[c]} (${fmtInterval(s.ci95[c], f0)}); per field ${f1(s.perField[c].mean)}${s.perField[c].sd === null ? '' : ` +/- ${f1(s.perField[c].sd!)}`}${s.uncertain[c] ? `; ${s.uncertain[c]} to review` : ''}`,
  ]);
  rows.push(['WBC per 1000 RBC (95 % CI)', fmtRatio(s.per1000RBC.WBC)]);
  rows.push(['Platelets per 1000 RBC (95 % CI)', fmtRatio(s.per1000RBC.Platelets)]);
  if (s.estimates) {
    const e = s.estimates;
    rows.push(['Analyser RBC (given)', `${e.rbcPerUl} per uL (${Number((e.rbcPerUl / 1e6).toPrecision(4))} x10^12/L)`]);
    rows.push(['WBC, ESTIMATE (95 % CI)', e.note ?? flagged('WBC', e.WBC)]);
    rows.push(['Platelets, ESTIMATE (95 % CI)', e.note ?? flagged('Platelets', e.Platelets)]);
  }
  return rows;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const mdCell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

const METHODS = [
  "Counts are cells hemocount found at the model's thresholds; cells in the review band are listed apart and not counted until reviewed.",
  "Intervals: exact Poisson (Garwood) for totals; exact conditional binomial (Clopper-Pearson) for ratios. They carry counting error only, not the detector's own errors or the smear's unevenness.",
  `Estimates use the ${ESTIMATE_METHOD}, from at least ${MIN_RATIO_RBC} red cells. They are estimates for screening and checking an analyser, not a replacement for it: they assume the counted fields represent the smear (monolayer area, no platelet clumps) and were not chosen for holding white cells or platelets (fields picked for a white cell inflate the white-cell estimate).`,
  'Research and laboratory assistance, not a diagnostic device.',
];

/** Classes whose review edge is their counting threshold: nothing of theirs is ever "to review". */
function noReviewBand(doc: CountDocument): string[] {
  const none = CLASSES.filter((c) => doc.review[c] >= doc.thresholds[c]);
  return none.length
    ? [`No review band for ${none.join(', ')} at these thresholds: each of their detections is counted or dropped, none is left to review.`]
    : [];
}

/** `generated`: when the report was made (ISO time), printed under the title. */
export function renderSampleReport(
  doc: CountDocument,
  o: { format: 'html' | 'md'; thumbs?: Record<string, string | null>; title?: string; generated?: string },
): string {
  const title = o.title ?? 'hemocount sample report';
  const bs = blocks(doc);
  const head = ['field', ...CLASSES, 'to review (R/W/P)', 'review'];
  const model = `${doc.model.name} ${doc.model.version} (sha256 ${doc.model.sha256.slice(0, 12)}); thresholds ${CLASSES.map((c) => `${c} ${doc.thresholds[c]}`).join(', ')}`;
  const intro = [...(o.generated ? [`Generated ${o.generated}.`] : []), `Model: ${model}.`, ...noReviewBand(doc)];
  if (o.format === 'md') {
    const out = [`# ${title}`, '', ...intro.flatMap((l) => [l, ''])];
    for (const b of bs) {
      out.push(`## Sample ${mdCell(b.title)}`, '', '| | |', '|---|---|', ...b.rows.map(([k, v]) => `| ${k} | ${mdCell(v)} |`), '', ...b.notes, '');
      out.push(
        `| ${head.join(' | ')} |`,
        `|${head.map(() => '---').join('|')}|`,
        ...b.fields.map((f) => `| ${mdCell(f.file)} | ${f.cells.map(mdCell).join(' | ')} |`),
        '',
      );
    }
    out.push('## Method', '', ...METHODS.map((m) => `- ${m}`), '');
    return out.join('\n');
  }
  const section = (b: Block) => `<section><h2>Sample ${esc(b.title)}</h2>
<table class="summary">${b.rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>
${b.notes.map((n) => `<p>${esc(n)}</p>`).join('')}
<table class="fields"><tr><th></th>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>
${b.fields
  .map((f) => {
    const t = o.thumbs?.[f.file];
    return `<tr><td>${t ? `<img src="${t}" alt="">` : ''}</td><td>${esc(f.file)}</td>${f.cells.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`;
  })
  .join('\n')}</table></section>`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:middle}.summary th{background:#f3f3f3}
img{width:160px;display:block}section{page-break-after:always}@media print{body{margin:1cm}}
</style></head><body><h1>${esc(title)}</h1>${intro.map((l) => `<p>${esc(l)}</p>`).join('')}
${bs.map(section).join('\n')}
<h2>Method</h2><ul>${METHODS.map((m) => `<li>${esc(m)}</li>`).join('')}</ul></body></html>
`;
}
