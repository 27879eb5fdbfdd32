/**
 * Running a model over an annotated set once, and what is built on those candidates:
 * the threshold sweep, calibration and model selection. The metrics are core/metrics.ts.
 */
import {
  type Criterion,
  type EvalImage,
  type Evaluation,
  agreement,
  bestRow,
  classAt,
  confusionMatrix,
  errorBreakdown,
  evaluate,
  leaveOutUndecided,
  reviewThreshold,
  subsets,
} from './core/metrics.js';
import { resolve } from 'node:path';
import { type ModelMetadata, type PerClass, perClass } from './core/types.js';
import { OutputGuard, type TruthSet } from './adapters/files.js';
import { readMetadata, withMetadata } from './adapters/onnx.js';
import { CLASSES } from './core/types.js';
import type { DetectOptions, Model } from './detector.js';

export interface Collected {
  images: EvalImage[];
  failed: { file: string; error: string }[];
  ms: number;
}

/**
 * One network pass per image; every later threshold is read off these candidates. iou: the
 * evaluation's matching IoU, which also decides which detections lie on an undecided cell.
 */
export async function collect(
  model: Model,
  truth: TruthSet,
  onProgress?: (i: number, file: string) => void,
  opts: DetectOptions = {},
  iou = 0.5,
): Promise<Collected> {
  const t0 = performance.now();
  const images: EvalImage[] = [];
  const failed: Collected['failed'] = [];
  for (const [i, t] of truth.images.entries()) {
    onProgress?.(i, t.file);
    try {
      const det = await model.detect(t.file, opts);
      const im: EvalImage = {
        file: t.file,
        width: det.width,
        height: det.height,
        truth: t.truth,
        candidates: det.candidates,
        ...(t.subset ? { subset: t.subset } : {}),
      };
      images.push(leaveOutUndecided(im, t.undecided ?? [], iou));
    } catch (e) {
      failed.push({ file: t.file, error: (e as Error).message });
    }
  }
  return { images, failed, ms: performance.now() - t0 };
}

export interface Report {
  model: { name: string; version: string; sha256: string };
  data: string;
  evaluation: Evaluation;
  atModel: PerClass<ReturnType<typeof classAt>>;
  thresholds: PerClass<number>;
  confusion: ReturnType<typeof confusionMatrix>;
  agreement: ReturnType<typeof agreement>;
  /** Where the errors are, per class, at the model's thresholds. */
  errors: PerClass<ReturnType<typeof errorBreakdown>>;
}

export function buildReport(model: Model, data: string, images: EvalImage[], iou = 0.5, criterion: Criterion = 'f1', thresholds?: PerClass<number>): Report {
  const th = thresholds ?? model.metadata.thresholds;
  return {
    model: model.info,
    data,
    evaluation: evaluate(images, { iou, criterion }),
    atModel: perClass((c) => classAt(images, c, th[c], iou)),
    thresholds: th,
    confusion: confusionMatrix(images, th, iou),
    agreement: agreement(images, th),
    errors: perClass((c) => errorBreakdown(images, c, th[c], iou)),
  };
}

export const CALIBRATION_TOLERANCE = 0.005;

/** Fine grid for calibration: 0.10 ... 0.90 in steps of 0.01. */
export const CALIBRATION_GRID = Array.from({ length: 81 }, (_, i) => Math.round((0.1 + i * 0.01) * 100) / 100);

export interface CalibrateFileOptions {
  /** The new model file (never the input model). */
  out: string;
  /** What the thresholds were chosen on, as recorded in the model (e.g. the data folder). */
  data: string;
  criterion?: Criterion;
  iou?: number;
  /** Annotated cells needed per class (default 10). */
  minCells?: number;
  /** Replace `out` even if hemocount did not write it (default: refused, as for every output). */
  overwrite?: boolean;
  /** Told when a class has fewer than 50 annotated cells (thresholds from so few are uncertain). */
  warn?: (message: string) => void;
  /** The detections were white-balanced (true) or not (false): the new model counts the same way. */
  whiteBalance?: boolean;
}

/**
 * Calibrate and write the result as a new model file: the model's network with the chosen
 * thresholds and review bands in its metadata. Refuses too few annotated cells, proves the
 * new file parses before it replaces anything, and never overwrites the input model.
 */
export async function calibrateToFile(model: Model, images: EvalImage[], o: CalibrateFileOptions): Promise<ModelMetadata> {
  if (!o || typeof o.out !== 'string' || typeof o.data !== 'string')
    throw new TypeError('calibrateToFile needs { out: the new model file, data: what the thresholds are chosen on }');
  if (o.criterion !== undefined && o.criterion !== 'f1' && o.criterion !== 'accuracy')
    throw new RangeError(`criterion must be 'f1' or 'accuracy', not ${JSON.stringify(o.criterion)}`);
  if (resolve(o.out) === resolve(model.path)) throw new Error(`${o.out}: is the input model, which calibration never modifies`);
  const guard = new OutputGuard(new Set([resolve(model.path)]), o.overwrite);
  // refused before the work, not after it
  const why = await guard.conflict(o.out);
  if (why) throw new Error(`${why}; refusing to replace it (overwrite: true to allow)`);
  const min = o.minCells ?? 10;
  for (const k of CLASSES) {
    const n = images.reduce((s, im) => s + im.truth.filter((t) => t.label === k).length, 0);
    if (n < min)
      throw new Error(`${o.data}: only ${n} ${k} cell(s) annotated; calibration needs at least ${min} per class (minCells; --min-cells on the command line)`);
    if (n < 50) o.warn?.(`only ${n} ${k} cells annotated; thresholds from fewer than 50 cells are uncertain`);
  }
  const meta = calibrate(model.metadata, images, o.data, o.criterion, o.iou);
  // thresholds chosen on balanced (or unbalanced) detections hold for counts made the same way
  if (o.whiteBalance !== undefined) {
    const { white_balance: _, ...input } = meta.input;
    meta.input = o.whiteBalance ? { ...input, white_balance: 'background' } : input;
  }
  // a threshold at which no cell of a class is found right is no calibration of it
  const chosen = (meta.calibration as { classes: PerClass<{ f1: number | null }> }).classes;
  for (const k of CLASSES)
    if ((chosen[k].f1 ?? 0) < 0.1)
      o.warn?.(
        `the model finds hardly any ${k} cell right on these images at any threshold (best F1 ${(100 * (chosen[k].f1 ?? 0)).toFixed(1)} %): its ${k} threshold (${meta.thresholds[k]}) means nothing; train it further first`,
      );
  const bytes = withMetadata(model.bytes, meta);
  readMetadata(bytes);
  await guard.write(o.out, bytes);
  return meta;
}

/** Pick per-class thresholds and review bands on `images`; returns new metadata. */
export function calibrate(meta: ModelMetadata, images: EvalImage[], data: string, criterion: Criterion = 'f1', iou = 0.5): ModelMetadata {
  const ev = evaluate(images, { iou, thresholds: CALIBRATION_GRID, criterion });
  // F1 within half a point of the best counts as a tie (noise on a validation set of this
  // size); among ties the better count accuracy wins
  const thresholds = perClass((c) => bestRow(ev.classes[c].sweep, criterion, CALIBRATION_TOLERANCE).threshold);
  const review = perClass((c) => reviewThreshold(images, c, thresholds[c], meta.postprocess.score_floor, 0.25, iou));
  const atChosen = perClass((c) => {
    const r = classAt(images, c, thresholds[c], iou);
    return {
      threshold: thresholds[c],
      precision: r.precision,
      recall: r.recall,
      f1: r.f1,
      accuracy: r.accuracy,
      ap50: ev.classes[c].ap50,
      ap5095: ev.classes[c].ap5095,
      truth: r.truth,
      counted: r.counted,
    };
  });
  // the same thresholds, seen on each subset (full fields and close-ups differ)
  const bySubset = Object.fromEntries(
    [...subsets(images)].map(([name, ims]) => [
      name,
      {
        images: ims.length,
        classes: perClass((c) => {
          const r = classAt(ims, c, thresholds[c], iou);
          return { precision: r.precision, recall: r.recall, f1: r.f1, accuracy: r.accuracy, truth: r.truth, counted: r.counted };
        }),
      },
    ]),
  );
  return {
    ...meta,
    thresholds,
    review,
    calibration: {
      data,
      // the network the thresholds were chosen with (an int8 model carries its fp32 network's)
      network: meta.name,
      images: images.length,
      criterion,
      iou,
      date: new Date().toISOString(),
      grid: '0.10-0.90 step 0.01',
      review_rule: 'lowest threshold whose band holds >= 25 % real cells',
      tie_rule: 'criterion within 0.005 of the best is a tie; the other metric decides',
      mAP50: ev.mAP50,
      mAP5095: ev.mAP5095,
      classes: atChosen,
      subsets: bySubset,
    },
  };
}
