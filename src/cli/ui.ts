/** Terminal helpers: colour (NO_COLOR aware), progress bar with ETA, tables. */
import type { PerClass } from '../core/types.js';
import { CLASSES } from '../core/types.js';
import type { SampleSummary } from '../core/samples.js';
import { sampleRows } from '../core/sample-report.js';

const useColour = () => !process.env.NO_COLOR && process.stderr.isTTY;
export const c = {
  red: (s: string) => (useColour() ? `\x1b[31m${s}\x1b[0m` : s),
  yellow: (s: string) => (useColour() ? `\x1b[33m${s}\x1b[0m` : s),
  dim: (s: string) => (useColour() ? `\x1b[2m${s}\x1b[0m` : s),
  bold: (s: string) => (useColour() ? `\x1b[1m${s}\x1b[0m` : s),
};

export const log = (s: string) => process.stderr.write(s + '\n');

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}

export class Progress {
  private t0 = Date.now();
  private readonly on: boolean;
  constructor(
    private total: number,
    quiet: boolean,
  ) {
    this.on = !quiet && Boolean(process.stderr.isTTY) && total > 0;
  }
  tick(done: number, label: string) {
    if (!this.on) return;
    const w = 24;
    const f = done / this.total;
    const el = (Date.now() - this.t0) / 1000;
    const eta = done ? (el / done) * (this.total - done) : NaN;
    const bar = '#'.repeat(Math.round(f * w)).padEnd(w, '.');
    const cols = process.stderr.columns || 100;
    const line = `[${bar}] ${done}/${this.total} ETA ${fmtTime(eta)} ${label}`;
    process.stderr.write(`\r${line.slice(0, cols - 1).padEnd(cols - 1)}`);
  }
  done() {
    if (this.on) process.stderr.write('\r' + ' '.repeat((process.stderr.columns || 100) - 1) + '\r');
  }
}

export function table(head: string[], rows: (string | number)[][], align: ('l' | 'r')[] = []): string {
  const body = rows.map((r) => r.map(String));
  const cells = [head, ...body];
  const w = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  // a cell past the head's columns is not padded
  const fmt = (r: string[]) => r.map((v, i) => ((align[i] ?? (i ? 'r' : 'l')) === 'l' ? v.padEnd(w[i] ?? 0) : v.padStart(w[i] ?? 0))).join('  ');
  return [fmt(head), w.map((x) => '-'.repeat(x)).join('  '), ...body.map(fmt)].join('\n');
}

export const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(2));
/** A difference in percentage points, with its sign. */
export const signed = (v: number) => `${v >= 0 ? '+' : ''}${(100 * v).toFixed(2)}`;
export const classCols = <T>(p: PerClass<T>, f: (v: T) => string | number) => CLASSES.map((k) => f(p[k]));

/** Samples for the terminal: the report's summary lines, one block per sample. */
export function samplesTable(samples: SampleSummary[]): string {
  return samples
    .map(
      (s) =>
        `sample ${s.name}: ${s.fields} field(s)${s.failed ? `, ${s.failed} failed` : ''}, ${s.fieldsToReview} to review\n` +
        sampleRows(s)
          .map(([k, v]) => `  ${k.padEnd(38)} ${v}`)
          .join('\n'),
    )
    .join('\n');
}
