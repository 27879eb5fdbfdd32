/**
 * Every evaluation metric of hemocount, in one place (used by the CLI, the server and the
 * web UI): the paper's count accuracy, precision / recall / F1 with greedy IoU matching,
 * COCO-style AP, a confusion matrix, and count agreement (Pearson, Bland-Altman).
 */
import { type Box, type Candidate, type CellClass, CLASSES, type PerClass, perClass } from './types.js';

export interface GroundTruthBox {
  label: CellClass;
  box: Box;
}
export interface EvalImage {
  file: string;
  truth: GroundTruthBox[];
  /** All candidates above the model's floor; thresholds are applied here, not in the model. */
  candidates: Candidate[];
  /** Image size, for telling cells cut by the border. */
  width?: number;
  height?: number;
  /** Named part of an evaluation set (e.g. 'full-field', 'close-up'), reported on its own. */
  subset?: string;
}

/**
 * Pascal VOC's rule for difficult objects: a candidate that overlaps an undecided cell of its
 * class (IoU >= iouThr) more than any labelled cell of that class is neither a hit nor a false
 * detection, so it leaves the evaluation; the undecided cells are no truth either.
 */
export function leaveOutUndecided(im: EvalImage, undecided: GroundTruthBox[], iouThr = 0.5): EvalImage {
  if (!undecided.length) return im;
  const best = (c: Candidate, boxes: GroundTruthBox[]) => Math.max(0, ...boxes.filter((t) => t.label === c.label).map((t) => iou(c.box, t.box)));
  return {
    ...im,
    candidates: im.candidates.filter((c) => {
      const u = best(c, undecided);
      return u < iouThr || u <= best(c, im.truth);
    }),
  };
}

/** Images grouped by subset, in first-seen order; untagged images form no subset. */
export function subsets<T extends { subset?: string }>(images: T[]): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const im of images) if (im.subset) out.set(im.subset, [...(out.get(im.subset) ?? []), im]);
  return out;
}

export function iou(a: Box, b: Box): number {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

/** The paper's accuracy: min(N_expert, N_count) / max(...); 1 when both are 0. */
export function countAccuracy(expert: number, counted: number): number {
  const hi = Math.max(expert, counted);
  return hi === 0 ? 1 : Math.min(expert, counted) / hi;
}

/**
 * Greedy matching of one class in one image: detections in descending score take the
 * unmatched ground-truth box of highest IoU >= iouThr. Because it is greedy by score, the
 * matches of the detections above any threshold are a prefix of this one matching, so a
 * whole threshold sweep needs no re-matching. Returns scores and TP flags, best first.
 */
export function matchClass(dets: Candidate[], truth: Box[], iouThr: number): { scores: number[]; tp: boolean[] } {
  const order = [...dets].sort((a, b) => b.score - a.score);
  const used = new Uint8Array(truth.length);
  const tp: boolean[] = [];
  for (const d of order) {
    let best = -1;
    let bestIou = iouThr;
    // hot (detections x cells, for every IoU of the AP): a plain indexed loop
    for (let g = 0; g < truth.length; g++) {
      if (used[g]) continue;
      const v = iou(d.box, truth[g]!);
      if (v >= bestIou) {
        bestIou = v;
        best = g;
      }
    }
    if (best >= 0) used[best] = 1;
    tp.push(best >= 0);
  }
  return { scores: order.map((d) => d.score), tp };
}

const ratio = (a: number, b: number): number | null => (b === 0 ? null : a / b);

export function f1(p: number | null, r: number | null): number | null {
  if (p === null && r === null) return null;
  const pp = p ?? 0;
  const rr = r ?? 0;
  return pp + rr === 0 ? 0 : (2 * pp * rr) / (pp + rr);
}

/**
 * COCO-style average precision (101 recall points, precision envelope) from the pooled,
 * score-sorted TP flags of one class; null when there is no ground truth.
 */
export function averagePrecision(scores: number[], tp: boolean[], numTruth: number): number | null {
  if (numTruth === 0) return null;
  const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const prec: number[] = [];
  const rec: number[] = [];
  let ctp = 0;
  let cfp = 0;
  for (const i of order) {
    if (tp[i]) ctp++;
    else cfp++;
    prec.push(ctp / (ctp + cfp));
    rec.push(ctp / numTruth);
  }
  for (let i = prec.length - 2; i >= 0; i--) prec[i] = Math.max(prec[i]!, prec[i + 1]!);
  let sum = 0;
  let k = 0;
  for (let r = 0; r <= 100; r++) {
    const target = r / 100;
    while (k < rec.length && rec[k]! < target - 1e-12) k++;
    sum += prec[k] ?? 0; // past the end when recall never reaches the target
  }
  return sum / 101;
}

export interface ClassRow {
  threshold: number;
  truth: number;
  counted: number;
  tp: number;
  fp: number;
  fn: number;
  /** The paper's count accuracy over the set. */
  accuracy: number;
  precision: number | null;
  recall: number | null;
  f1: number | null;
  /** Mean of per-image count accuracies, and mean absolute per-image count error. */
  imageAccuracy: number;
  mae: number;
}

interface ClassMatches {
  perImage: { scores: number[]; tp: boolean[]; truth: number }[];
  truth: number;
}

function classMatches(images: EvalImage[], cls: CellClass, iouThr: number): ClassMatches {
  const perImage = images.map((im) => {
    const truth = im.truth.filter((t) => t.label === cls).map((t) => t.box);
    return {
      ...matchClass(
        im.candidates.filter((c) => c.label === cls),
        truth,
        iouThr,
      ),
      truth: truth.length,
    };
  });
  return { perImage, truth: perImage.reduce((s, p) => s + p.truth, 0) };
}

function rowAt(m: ClassMatches, threshold: number): ClassRow {
  let tp = 0;
  let counted = 0;
  let accSum = 0;
  let absErr = 0;
  for (const p of m.perImage) {
    let n = 0;
    let t = 0;
    for (let i = 0; i < p.scores.length && p.scores[i]! >= threshold; i++) {
      n++;
      if (p.tp[i]) t++;
    }
    counted += n;
    tp += t;
    accSum += countAccuracy(p.truth, n);
    absErr += Math.abs(n - p.truth);
  }
  const precision = ratio(tp, counted);
  const recall = ratio(tp, m.truth);
  const nImg = Math.max(1, m.perImage.length);
  return {
    threshold,
    truth: m.truth,
    counted,
    tp,
    fp: counted - tp,
    fn: m.truth - tp,
    accuracy: countAccuracy(m.truth, counted),
    precision,
    recall,
    f1: f1(precision, recall),
    imageAccuracy: accSum / nImg,
    mae: absErr / nImg,
  };
}

/** The paper's grid: 0.20, 0.25, ... 0.85. */
export const PAPER_THRESHOLDS = Array.from({ length: 14 }, (_, i) => Math.round((0.2 + 0.05 * i) * 100) / 100);

export type Criterion = 'f1' | 'accuracy';

/**
 * The best row: highest criterion, ties broken by the other metric, then the lower threshold.
 * With a tolerance, rows within it of the top are ties: differences smaller than a validation
 * set can resolve should not decide, the other metric then does.
 */
export function bestRow(rows: ClassRow[], criterion: Criterion = 'f1', tolerance = 0): ClassRow {
  const key = (r: ClassRow): [number, number] => (criterion === 'f1' ? [r.f1 ?? -1, r.accuracy] : [r.accuracy, r.f1 ?? -1]);
  if (tolerance > 0) {
    const top = Math.max(...rows.map((r) => key(r)[0]));
    const near = rows.filter((r) => key(r)[0] >= top - tolerance);
    return near.reduce((best, r) => (key(r)[1] > key(best)[1] + 1e-12 ? r : best));
  }
  return rows.reduce((best, r) => {
    const [a1, a2] = key(r);
    const [b1, b2] = key(best);
    return a1 > b1 + 1e-12 || (Math.abs(a1 - b1) <= 1e-12 && a2 > b2 + 1e-12) ? r : best;
  });
}

export interface ClassEvaluation {
  sweep: ClassRow[];
  best: ClassRow;
  ap50: number | null;
  ap5095: number | null;
}

export interface Evaluation {
  images: number;
  iou: number;
  classes: PerClass<ClassEvaluation>;
  mAP50: number | null;
  mAP5095: number | null;
}

function pooledAp(images: EvalImage[], cls: CellClass, iouThr: number): number | null {
  const m = classMatches(images, cls, iouThr);
  return averagePrecision(
    m.perImage.flatMap((p) => p.scores),
    m.perImage.flatMap((p) => p.tp),
    m.truth,
  );
}

const mean = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
};

/** Every threshold's row read off one matching, and the best of them. */
function sweepOf(m: ClassMatches, thresholds: number[], criterion?: Criterion): { sweep: ClassRow[]; best: ClassRow } {
  const sweep = thresholds.map((t) => rowAt(m, t));
  return { sweep, best: bestRow(sweep, criterion) };
}

/** Match once per class, then read every threshold of the sweep off that one matching. */
export function evaluate(images: EvalImage[], opts: { iou?: number; thresholds?: number[]; criterion?: Criterion } = {}): Evaluation {
  const iouThr = opts.iou ?? 0.5;
  const thresholds = opts.thresholds ?? PAPER_THRESHOLDS;
  const classes = perClass((cls): ClassEvaluation => {
    const m = classMatches(images, cls, iouThr);
    const { sweep, best } = sweepOf(m, thresholds, opts.criterion);
    const ap50 = averagePrecision(
      m.perImage.flatMap((p) => p.scores),
      m.perImage.flatMap((p) => p.tp),
      m.truth,
    );
    // IoU 0.5 is the matching already done above; only the nine stricter ones are new
    const ap5095 = mean([ap50, ...Array.from({ length: 9 }, (_, i) => pooledAp(images, cls, 0.55 + 0.05 * i))]);
    return { sweep, best, ap50, ap5095 };
  });
  return {
    images: images.length,
    iou: iouThr,
    classes,
    mAP50: mean(CLASSES.map((c) => classes[c].ap50)),
    mAP5095: mean(CLASSES.map((c) => classes[c].ap5095)),
  };
}

export interface PairedBootstrap {
  /** score(b) - score(a) on the images as they are. */
  diff: number;
  /** 95 % percentile interval of that difference over the resamples. */
  low: number;
  high: number;
  rounds: number;
}

/**
 * Is model b really better than model a on this validation set? A paired bootstrap over
 * images: both models are scored on the same resampled images (drawn with replacement
 * within each subset, so a subset keeps its size), `rounds` times. `score` turns the
 * evaluations of the subsets (or of the whole set when no image has one) into one number,
 * e.g. the selection rule. Images are matched once; a resample only re-reads the sweep.
 * The evaluations passed to `score` carry the F1 sweep, not AP (null there).
 */
export function pairedBootstrap(
  a: EvalImage[],
  b: EvalImage[],
  score: (parts: Evaluation[]) => number,
  opts: { iou?: number; thresholds?: number[]; criterion?: Criterion; rounds?: number; seed?: number } = {},
): PairedBootstrap {
  if (a.length !== b.length || a.some((im, i) => im.file !== b[i]!.file))
    throw new Error('pairedBootstrap: both models must be evaluated on the same images, in the same order');
  const iouThr = opts.iou ?? 0.5;
  const thresholds = opts.thresholds ?? PAPER_THRESHOLDS;
  const rounds = opts.rounds ?? 1000;
  const groups = a.some((im) => im.subset)
    ? [...subsets(a.map((im, i) => ({ i, subset: im.subset })))].map(([, g]) => g.map((x) => x.i))
    : [a.map((_, i) => i)];
  const matched = [a, b].map((ims) => perClass((cls) => classMatches(ims, cls, iouThr).perImage));
  const scoreOf = (m: (typeof matched)[number], draws: number[][]) =>
    score(
      draws.map((idx) => {
        const classes = perClass((cls): ClassEvaluation => {
          const perImage = idx.map((i) => m[cls][i]!);
          return { ...sweepOf({ perImage, truth: perImage.reduce((s, p) => s + p.truth, 0) }, thresholds, opts.criterion), ap50: null, ap5095: null };
        });
        return { images: idx.length, iou: iouThr, classes, mAP50: null, mAP5095: null };
      }),
    );
  const [ma, mb] = matched as [(typeof matched)[number], (typeof matched)[number]];
  const diff = scoreOf(mb, groups) - scoreOf(ma, groups);
  // mulberry32: a seeded generator, so the interval is the same on every run
  let state = (opts.seed ?? 1) >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const diffs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const draws = groups.map((g) => g.map(() => g[Math.floor(random() * g.length)]!));
    diffs.push(scoreOf(mb, draws) - scoreOf(ma, draws));
  }
  diffs.sort((x, y) => x - y);
  const at = (q: number) => diffs[Math.min(diffs.length - 1, Math.floor(q * diffs.length))] ?? diff;
  return { diff, low: at(0.025), high: at(0.975), rounds };
}

/** Metrics of one class at one threshold (e.g. the model's recommended thresholds). */
export function classAt(images: EvalImage[], cls: CellClass, threshold: number, iouThr = 0.5): ClassRow {
  return rowAt(classMatches(images, cls, iouThr), threshold);
}

export type ConfusionLabel = CellClass | 'background';
/** matrix[truth][predicted], 'background' for a missed cell (row) or a false detection (column). */
export type Confusion = Record<ConfusionLabel, Record<ConfusionLabel, number>>;

export function confusionMatrix(images: EvalImage[], thresholds: PerClass<number>, iouThr = 0.5): Confusion {
  const labels: ConfusionLabel[] = [...CLASSES, 'background'];
  const m = Object.fromEntries(labels.map((a) => [a, Object.fromEntries(labels.map((b) => [b, 0]))])) as Confusion;
  for (const im of images) {
    const dets = im.candidates.filter((c) => c.score >= thresholds[c.label]).sort((a, b) => b.score - a.score);
    const used = new Uint8Array(im.truth.length);
    for (const d of dets) {
      // class-agnostic match, preferring a same-class cell at equal overlap
      let best = -1;
      let bestIou = iouThr;
      im.truth.forEach((t, g) => {
        if (used[g]) return;
        const v = iou(d.box, t.box) + (t.label === d.label ? 1e-9 : 0);
        if (v >= bestIou) {
          bestIou = v;
          best = g;
        }
      });
      const matched = best >= 0 ? im.truth[best] : undefined;
      if (matched) {
        used[best] = 1;
        m[matched.label][d.label]++;
      } else m.background[d.label]++;
    }
    im.truth.forEach((t, g) => {
      if (!used[g]) m[t.label].background++;
    });
  }
  return m;
}

export function pearson(x: number[], y: number[]): number | null {
  const n = x.length;
  if (n < 2) return null;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? null : sxy / Math.sqrt(sxx * syy);
}

export interface BlandAltman {
  n: number;
  /** Mean of (counted - expert). */
  bias: number;
  sd: number;
  lower: number;
  upper: number;
  points: { mean: number; diff: number }[];
}

/** Bland-Altman agreement of per-image counts: bias and 95 % limits (bias +- 1.96 SD, sample SD). */
export function blandAltman(expert: number[], counted: number[]): BlandAltman {
  const n = expert.length;
  const diffs = counted.map((c, i) => c - expert[i]!);
  const bias = n ? diffs.reduce((a, b) => a + b, 0) / n : 0;
  const sd = n > 1 ? Math.sqrt(diffs.reduce((s, d) => s + (d - bias) ** 2, 0) / (n - 1)) : 0;
  return {
    n,
    bias,
    sd,
    lower: bias - 1.96 * sd,
    upper: bias + 1.96 * sd,
    points: diffs.map((d, i) => ({ mean: (counted[i]! + expert[i]!) / 2, diff: d })),
  };
}

/** Per-image expert and counted numbers of one class at a threshold. */
export function perImageCounts(images: EvalImage[], cls: CellClass, threshold: number): { expert: number[]; counted: number[] } {
  return {
    expert: images.map((im) => im.truth.filter((t) => t.label === cls).length),
    counted: images.map((im) => im.candidates.filter((c) => c.label === cls && c.score >= threshold).length),
  };
}

/** Count agreement per class at given thresholds. */
export function agreement(images: EvalImage[], thresholds: PerClass<number>) {
  return perClass((cls) => {
    const { expert, counted } = perImageCounts(images, cls, thresholds[cls]);
    return { pearson: pearson(expert, counted), blandAltman: blandAltman(expert, counted) };
  });
}

/**
 * Review band below a counting threshold t: the lowest r (grid step 0.05, r >= floor)
 * such that at least `minPrecision` of all the detections in [r, t) are real cells: a band
 * worth a human look; lower, it would be mostly noise.
 */
export function reviewThreshold(images: EvalImage[], cls: CellClass, t: number, floor: number, minPrecision = 0.25, iouThr = 0.5): number {
  const m = classMatches(images, cls, iouThr);
  const at = rowAt(m, t);
  let best = t;
  let prev = at.counted;
  for (let r = Math.round((t - 0.05) * 100) / 100; r >= floor - 1e-9; r = Math.round((r - 0.05) * 100) / 100) {
    const row = rowAt(m, r);
    const n = row.counted - at.counted;
    if (row.counted === prev) continue; // no new detections: widening the band gains nothing
    prev = row.counted;
    if ((row.tp - at.tp) / n >= minPrecision) best = r;
  }
  return best;
}

/**
 * Where the errors of one class are, at one threshold (the accuracy issue's breakdown):
 * missed cells split by whether they touch the image border; false detections split into
 * duplicates (IoU >= 0.5 with a cell another detection already took), loose boxes (IoU
 * 0.3-0.5 with a cell), cells of another class, and detections far from any cell.
 */
export interface ErrorBreakdown {
  truth: number;
  missed: number;
  missedAtBorder: number;
  false: number;
  falseLoose: number;
  falseDuplicate: number;
  falseWrongClass: number;
  falseFar: number;
}

export function errorBreakdown(images: EvalImage[], cls: CellClass, threshold: number, iouThr = 0.5, borderPx = 3): ErrorBreakdown {
  const out: ErrorBreakdown = { truth: 0, missed: 0, missedAtBorder: 0, false: 0, falseLoose: 0, falseDuplicate: 0, falseWrongClass: 0, falseFar: 0 };
  for (const im of images) {
    const truth = im.truth.filter((t) => t.label === cls).map((t) => t.box);
    const others = im.truth.filter((t) => t.label !== cls).map((t) => t.box);
    const dets = im.candidates.filter((c) => c.label === cls && c.score >= threshold).sort((a, b) => b.score - a.score);
    // the image extent: given, or the furthest box seen
    const W = im.width ?? Math.max(0, ...im.truth.map((t) => t.box[2]), ...dets.map((d) => d.box[2]));
    const H = im.height ?? Math.max(0, ...im.truth.map((t) => t.box[3]), ...dets.map((d) => d.box[3]));
    const used = new Int32Array(truth.length).fill(-1);
    const unmatched: Candidate[] = [];
    dets.forEach((d, k) => {
      let best = -1;
      let bestIou = iouThr;
      for (let g = 0; g < truth.length; g++) {
        if (used[g]! >= 0) continue;
        const v = iou(d.box, truth[g]!);
        if (v >= bestIou) {
          bestIou = v;
          best = g;
        }
      }
      if (best >= 0) used[best] = k;
      else unmatched.push(d);
    });
    out.truth += truth.length;
    truth.forEach((b, g) => {
      if (used[g]! >= 0) return;
      out.missed++;
      if (b[0] <= borderPx || b[1] <= borderPx || b[2] >= W - borderPx || b[3] >= H - borderPx) out.missedAtBorder++;
    });
    for (const d of unmatched) {
      out.false++;
      const best = Math.max(0, ...truth.map((t) => iou(d.box, t)));
      const bestMatched = Math.max(0, ...truth.filter((_, g) => used[g]! >= 0).map((t) => iou(d.box, t)));
      if (bestMatched >= 0.5) out.falseDuplicate++;
      else if (best >= 0.3) out.falseLoose++;
      else if (Math.max(0, ...others.map((t) => iou(d.box, t))) >= 0.5) out.falseWrongClass++;
      else out.falseFar++;
    }
  }
  return out;
}
