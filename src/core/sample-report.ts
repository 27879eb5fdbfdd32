/**
 * The printable sample report (HTML or Markdown) from a count document: per sample, the
 * totals with intervals, per-field mean and SD, ratios, estimates, review status and the
 * fields. Text only (no I/O): thumbnails come in as data URIs.
 */
import type { CountDocument } from './formats.js';
import { ESTIMATE_METHOD, type Interval, type RatioValue, type SampleSummary } from './samples.js';
import { CLASSES } from './types.js';

const f0 = (v: number) => (Number.isFinite(v) ? String(Math.round(v)) : 'inf');
const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : 'inf');
export const fmtInterval = (ci: Interval, f = f1) => `${f(ci[0])}-${f(ci[1])}`;
export const fmtRatio = (r: RatioValue | null, f = f1) => (r ? `${f(r.value)} (${fmtInterval(r.ci95, f)})` : 'n/a (no red cells)');
const fmtPerUl = (r: RatioValue | null) => (r ? `${sci(r.value)} (${sci(r.ci95[0])}-${sci(r.ci95[1])})` : 'n/a');
const sci = (v: number) => (Number.isFinite(v) ? (v >= 1e4 ? v.toExponential(2).replace('e+', 'e') : String(Math.round(v))) : 'inf');

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
    rows.push(['Analyser RBC per uL (given)', sci(s.estimates.rbcPerUl)]);
    rows.push(['WBC per uL, ESTIMATE (95 % CI)', fmtPerUl(s.estimates.WBC)]);
    rows.push(['Platelets per uL, ESTIMATE (95 % CI)', fmtPerUl(s.estimates.Platelets)]);
  }
  return rows;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const mdCell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

const METHODS = [
  "Counts are cells hemocount found at the model's thresholds; cells in the review band are listed apart and not counted until reviewed.",
  "Intervals: exact Poisson (Garwood) for totals; exact conditional binomial (Clopper-Pearson) for ratios. They carry counting error only, not the detector's own errors or the smear's unevenness.",
  `Estimates per microlitre use the ${ESTIMATE_METHOD}. They are estimates for screening and checking an analyser, not a replacement for it: they assume the counted fields represent the smear (monolayer area, no platelet clumps).`,
];

export function renderSampleReport(doc: CountDocument, o: { format: 'html' | 'md'; thumbs?: Record<string, string | null>; title?: string }): string {
  const title = o.title ?? 'hemocount sample report';
  const bs = blocks(doc);
  const head = ['field', ...CLASSES, 'to review (R/W/P)', 'review'];
  const model = `${doc.model.name} ${doc.model.version} (sha256 ${doc.model.sha256.slice(0, 12)}); thresholds ${CLASSES.map((c) => `${c} ${doc.thresholds[c]}`).join(', ')}`;
  if (o.format === 'md') {
    const out = [`# ${title}`, '', `Model: ${model}.`, ''];
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
</style></head><body><h1>${esc(title)}</h1><p>Model: ${esc(model)}.</p>
${bs.map(section).join('\n')}
<h2>Method</h2><ul>${METHODS.map((m) => `<li>${esc(m)}</li>`).join('')}</ul></body></html>
`;
}
