/**
 * Samples: several fields of view of one smear summarised as one result (no I/O).
 * Totals, per-field mean and SD, exact Poisson intervals, ratios per 1000 red cells and,
 * given the analyser's red-cell count, ratio-method estimates per microlitre.
 */
import { type CellClass, CLASSES, type PerClass, perClass } from './types.js';

/** The part of an image result a sample needs. */
export interface FieldResult {
  file: string;
  sample?: string;
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  error?: string;
  reviewed?: { by?: string; at: string };
}

export type Interval = [low: number, high: number];

export interface SampleSummary {
  name: string;
  /** The fields (image files) of the sample, counted or not. */
  images: string[];
  /** Fields counted (failed ones are listed in `images` but add nothing). */
  fields: number;
  failed: number;
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  /** 95 % exact (Garwood) Poisson interval of each total. */
  ci95: PerClass<Interval>;
  perField: PerClass<{ mean: number; sd: number | null }>;
  /** White cells and platelets per 1000 red cells, with 95 % intervals; null without red cells. */
  per1000RBC: { WBC: RatioValue | null; Platelets: RatioValue | null };
  /** Fields with cells in the review band still undecided. */
  fieldsToReview: number;
  fieldsReviewed: number;
  /**
   * Ratio-method estimates per microlitre, only when the analyser's red-cell count is given;
   * null (with `note`) when fewer than MIN_RATIO_RBC red cells were counted.
   */
  estimates?: { rbcPerUl: number; WBC: RatioValue | null; Platelets: RatioValue | null; note?: string };
}

export interface RatioValue {
  value: number;
  ci95: Interval;
}

/**
 * Why an analyser red-cell count cannot be right, or null. Analysers print 4.8 (x10^12/L) for
 * 4.8 million per microlitre: taken as per microlitre, that would give platelet estimates of 0.
 */
export function rbcCountProblem(v: number): string | null {
  if (!(Number.isFinite(v) && v > 0)) return 'is not a positive number (red cells per microlitre, e.g. 4.8e6)';
  if (v < 100) return `looks like x10^12/L (an analyser's ${v} means ${v}e6 per microlitre): give red cells per microlitre, e.g. ${v}e6`;
  if (v < RBC_PER_UL[0] || v > RBC_PER_UL[1])
    return `red cells per microlitre lies outside human blood (${RBC_PER_UL[0] / 1e6}-${RBC_PER_UL[1] / 1e6} million per microlitre): give red cells per microlitre, e.g. 4.8e6`;
  return null;
}
export const RBC_PER_UL = [0.5e6, 10e6] as const;

/**
 * Red cells a ratio-method estimate needs: the method counts cells per 1000 red cells, and
 * fewer leave the estimate to chance (20 red cells, one field, gave 0 platelets per microlitre).
 */
export const MIN_RATIO_RBC = 1000;

export const ESTIMATE_METHOD =
  'ratio method: (cells counted / red cells counted) x analyser red-cell count; the interval carries the counting ' +
  '(Poisson) error only, taking the analyser count as exact';

function estimates(rbcPerUl: number, rbc: number, fields: number, at: (c: 'WBC' | 'Platelets') => RatioValue | null): NonNullable<SampleSummary['estimates']> {
  if (rbc >= MIN_RATIO_RBC) return { rbcPerUl, WBC: at('WBC'), Platelets: at('Platelets') };
  const need = rbc > 0 ? ` (about ${Math.ceil((MIN_RATIO_RBC * fields) / rbc)} fields like these in all)` : '';
  return { rbcPerUl, WBC: null, Platelets: null, note: `not given: ${rbc} red cells counted, the ratio method needs at least ${MIN_RATIO_RBC}${need}` };
}

/**
 * Group image results into samples and summarise each. `rbcCount` gives the analyser's
 * red-cell count per microlitre by sample name. Images without a sample are left out.
 */
export function summariseSamples(images: FieldResult[], rbcCount: Record<string, number> = {}): SampleSummary[] {
  const groups = new Map<string, FieldResult[]>();
  for (const im of images) {
    if (im.sample === undefined) continue;
    if (!groups.has(im.sample)) groups.set(im.sample, []);
    groups.get(im.sample)!.push(im);
  }
  return [...groups].map(([name, fields]) => summarise(name, fields, rbcCount[name]));
}

function summarise(name: string, all: FieldResult[], rbcPerUl?: number): SampleSummary {
  const ok = all.filter((f) => !f.error);
  const counts = perClass((c) => ok.reduce((s, f) => s + f.counts[c], 0));
  const ratio = (c: CellClass) => (counts.RBC > 0 ? perThousand(counts[c], counts.RBC) : null);
  const per1000RBC = { WBC: ratio('WBC'), Platelets: ratio('Platelets') };
  const scaled = (r: RatioValue | null, k: number) => r && { value: (r.value * k) / 1000, ci95: [(r.ci95[0] * k) / 1000, (r.ci95[1] * k) / 1000] as Interval };
  return {
    name,
    images: all.map((f) => f.file),
    fields: ok.length,
    failed: all.length - ok.length,
    counts,
    uncertain: perClass((c) => ok.reduce((s, f) => s + f.uncertain[c], 0)),
    ci95: perClass((c) => poissonInterval(counts[c])),
    perField: perClass((c) => meanSd(ok.map((f) => f.counts[c]))),
    per1000RBC,
    fieldsToReview: ok.filter((f) => !f.reviewed && CLASSES.some((c) => f.uncertain[c] > 0)).length,
    fieldsReviewed: ok.filter((f) => f.reviewed).length,
    ...(rbcPerUl !== undefined && { estimates: estimates(rbcPerUl, counts.RBC, ok.length, (c) => scaled(per1000RBC[c], rbcPerUl)) }),
  };
}

export function meanSd(xs: number[]): { mean: number; sd: number | null } {
  if (!xs.length) return { mean: 0, sd: null };
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  if (xs.length < 2) return { mean, sd: null };
  return { mean, sd: Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1)) };
}

/**
 * `a` cells per 1000 of `b` cells, with the exact interval of the conditional binomial
 * (a of a+b; Clopper-Pearson) mapped through p/(1-p): two independent Poisson counts.
 */
export function perThousand(a: number, b: number, alpha = 0.05): RatioValue {
  const n = a + b;
  const lo = a === 0 ? 0 : solve((p) => betaInc(a, n - a + 1, p), alpha / 2, 0, 1);
  const hi = b === 0 ? 1 : solve((p) => betaInc(a + 1, n - a, p), 1 - alpha / 2, 0, 1);
  const r = (p: number) => (p >= 1 ? Infinity : (1000 * p) / (1 - p));
  return { value: (1000 * a) / b, ci95: [r(lo), r(hi)] };
}

/** Exact (Garwood) interval for a Poisson count. */
export function poissonInterval(n: number, alpha = 0.05): Interval {
  const top = n + 20 * Math.sqrt(n + 1) + 20;
  const lo = n === 0 ? 0 : solve((l) => gammaInc(n, l), alpha / 2, 0, top);
  const hi = solve((l) => gammaInc(n + 1, l), 1 - alpha / 2, 0, top);
  return [lo, hi];
}

/** x in [lo, hi] where the increasing function f reaches y (bisection: robust; 100 halvings reach double precision). */
function solve(f: (x: number) => number, y: number, lo: number, hi: number): number {
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (f(mid) < y) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9): ~15 significant digits
  const g = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
    9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = 0;
  const t = x + 7.5;
  for (const [i, c] of g.entries()) a += i === 0 ? c : c / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularised lower incomplete gamma P(a, x): series below a+1, continued fraction above. */
export function gammaInc(a: number, x: number): number {
  if (x <= 0) return 0;
  const lead = Math.exp(-x + a * Math.log(x) - logGamma(a));
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 10000 && Math.abs(term) > Math.abs(sum) * 1e-15; n++) {
      term *= x / (a + n);
      sum += term;
    }
    return sum * lead;
  }
  // Q(a, x) = lead / (x+1-a - 1(1-a)/(x+3-a - 2(2-a)/(x+5-a - ...))), modified Lentz
  let b = x + 1 - a;
  let c = 1 / TINY;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = guard(an * d + b);
    c = guard(b + an / c);
    d = 1 / d;
    h *= d * c;
    if (Math.abs(d * c - 1) < 1e-15) break;
  }
  return 1 - lead * h;
}

/** Regularised incomplete beta I_x(a, b). */
export function betaInc(a: number, b: number, x: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - betaInc(b, a, 1 - x); // the fraction converges fast on this side
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x)) / a;
  // 1/(1+ d1/(1+ d2/(1+ ...))), modified Lentz
  let c = 1;
  let d = 1 / guard(1 - ((a + b) * x) / (a + 1));
  let h = d;
  for (let m = 1; m < 10000; m++) {
    const even = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 / guard(1 + even * d);
    c = guard(1 + even / c);
    h *= d * c;
    const odd = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 / guard(1 + odd * d);
    c = guard(1 + odd / c);
    h *= d * c;
    if (Math.abs(d * c - 1) < 1e-15) break;
  }
  return front * h;
}

const TINY = 1e-300;
const guard = (v: number) => (Math.abs(v) < TINY ? TINY : v);
