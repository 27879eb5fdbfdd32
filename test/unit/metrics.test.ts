import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scoreOfParts, selectionScore, validationCurve } from '../../src/core/report.js';
import {
  agreement,
  averagePrecision,
  bestRow,
  blandAltman,
  classAt,
  confusionMatrix,
  countAccuracy,
  evaluate,
  f1,
  iou,
  leaveOutUndecided,
  matchClass,
  pairedBootstrap,
  pearson,
  PAPER_THRESHOLDS,
  reviewThreshold,
  type EvalImage,
} from '../../src/core/metrics.js';

const close = (a: number | null, b: number, eps = 1e-9) => assert.ok(a !== null && Math.abs(a - b) < eps, `${a} != ${b}`);

test('IoU and the paper count accuracy', () => {
  close(iou([0, 0, 10, 10], [5, 0, 15, 10]), 50 / 150);
  assert.equal(iou([0, 0, 1, 1], [2, 2, 3, 3]), 0);
  assert.equal(countAccuracy(135, 123), 123 / 135);
  assert.equal(countAccuracy(10, 12), 10 / 12);
  assert.equal(countAccuracy(0, 0), 1);
  assert.equal(countAccuracy(0, 3), 0);
});

test('greedy matching: a duplicate detection on one cell is a false positive', () => {
  const m = matchClass(
    [
      { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] },
      { label: 'RBC', score: 0.8, box: [0, 0, 10, 9] },
      { label: 'RBC', score: 0.7, box: [50, 50, 60, 60] },
    ],
    [
      [0, 0, 10, 10],
      [100, 100, 110, 110],
    ],
    0.5,
  );
  assert.deepEqual(m.tp, [true, false, false]);
});

test('precision, recall, F1 and per-image counts at a threshold (hand computed)', () => {
  const imgs: EvalImage[] = [
    {
      file: 'a',
      truth: [
        { label: 'RBC', box: [0, 0, 10, 10] },
        { label: 'RBC', box: [20, 0, 30, 10] },
      ],
      candidates: [
        { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] },
        { label: 'RBC', score: 0.3, box: [40, 0, 50, 10] },
      ],
    },
    { file: 'b', truth: [{ label: 'RBC', box: [0, 0, 10, 10] }], candidates: [] },
  ];
  const r = classAt(imgs, 'RBC', 0.25);
  assert.deepEqual([r.tp, r.fp, r.fn, r.counted, r.truth], [1, 1, 2, 2, 3]);
  close(r.precision, 0.5);
  close(r.recall, 1 / 3);
  close(r.f1, 0.4);
  close(r.accuracy, 2 / 3);
  close(r.imageAccuracy, (1 + 0) / 2);
  close(r.mae, (0 + 1) / 2);
  const hi = classAt(imgs, 'RBC', 0.5);
  close(hi.precision, 1);
  close(hi.accuracy, 1 / 3);
});

test('edge cases: no detections, no ground truth, a class absent', () => {
  const none: EvalImage[] = [{ file: 'a', truth: [{ label: 'WBC', box: [0, 0, 10, 10] }], candidates: [] }];
  const r = classAt(none, 'WBC', 0.5);
  assert.equal(r.precision, null);
  assert.equal(r.recall, 0);
  assert.equal(r.f1, 0);
  const absent = classAt(none, 'Platelets', 0.5);
  assert.equal(absent.recall, null);
  assert.equal(absent.f1, null);
  assert.equal(absent.accuracy, 1);
  const fpOnly: EvalImage[] = [{ file: 'a', truth: [], candidates: [{ label: 'RBC', score: 0.9, box: [0, 0, 1, 1] }] }];
  const p = classAt(fpOnly, 'RBC', 0.5);
  assert.equal(p.precision, 0);
  assert.equal(p.recall, null);
  assert.equal(p.f1, 0);
  assert.equal(evaluate(fpOnly).classes.RBC.ap50, null);
  assert.equal(f1(null, null), null);
});

test('undecided cells (VOC difficult): a detection on one is neither a hit nor a false detection', () => {
  const im: EvalImage = {
    file: 'a',
    truth: [{ label: 'RBC', box: [0, 0, 10, 10] }],
    candidates: [
      { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] }, // the labelled cell
      { label: 'RBC', score: 0.8, box: [20, 0, 30, 10] }, // the undecided cell
      { label: 'Platelets', score: 0.8, box: [20, 0, 30, 10] }, // another class there: still judged
      { label: 'RBC', score: 0.7, box: [40, 0, 50, 10] }, // nothing there
    ],
  };
  const undecided = [{ label: 'RBC' as const, box: [20, 0, 30, 10] as [number, number, number, number] }];
  const before = classAt([im], 'RBC', 0.5);
  assert.deepEqual([before.tp, before.fp, before.counted], [1, 2, 3]);
  const after = leaveOutUndecided(im, undecided);
  const r = classAt([after], 'RBC', 0.5);
  assert.deepEqual([r.tp, r.fp, r.fn, r.counted, r.truth], [1, 1, 0, 2, 1]);
  assert.equal(classAt([after], 'Platelets', 0.5).fp, 1);
  assert.equal(leaveOutUndecided(im, []), im);
});

test('AP: COCO 101-point interpolation, checked by hand', () => {
  // 2 cells; detections TP, FP, TP: precision 1, 1/2, 2/3 at recall .5, .5, 1.
  // Envelope: recall <= .5 -> 1, recall in (.5, 1] -> 2/3. 51 points at 1 and 50 at 2/3.
  close(averagePrecision([0.9, 0.8, 0.7], [true, false, true], 2), (51 + 50 * (2 / 3)) / 101);
  close(averagePrecision([0.9], [true], 1), 1);
  close(averagePrecision([0.9, 0.8], [false, true], 1), 0.5);
  // a missed cell caps recall at 1/2: points above 0.5 recall contribute 0
  close(averagePrecision([0.9], [true], 2), 51 / 101);
  assert.equal(averagePrecision([], [], 0), null);
});

test('the sweep reads every threshold off one matching', () => {
  const imgs: EvalImage[] = [
    {
      file: 'a',
      truth: [{ label: 'Platelets', box: [0, 0, 10, 10] }],
      candidates: [
        { label: 'Platelets', score: 0.5, box: [0, 0, 10, 10] },
        { label: 'Platelets', score: 0.3, box: [30, 30, 40, 40] },
      ],
    },
  ];
  const ev = evaluate(imgs);
  assert.deepEqual(
    ev.classes.Platelets.sweep.map((r) => r.threshold),
    PAPER_THRESHOLDS,
  );
  assert.equal(PAPER_THRESHOLDS.length, 14);
  const at = (t: number) => ev.classes.Platelets.sweep.find((r) => Math.abs(r.threshold - t) < 1e-9)!;
  assert.equal(at(0.3).counted, 2);
  assert.equal(at(0.35).counted, 1);
  assert.equal(at(0.55).counted, 0);
  // best by F1: 0.35..0.5 all give F1 = 1; the lowest threshold wins ties
  assert.equal(ev.classes.Platelets.best.threshold, 0.35);
  assert.equal(evaluate(imgs, { criterion: 'accuracy' }).classes.Platelets.best.threshold, 0.35);
});

test('confusion matrix: a WBC called RBC, a missed platelet, a false RBC', () => {
  const imgs: EvalImage[] = [
    {
      file: 'a',
      truth: [
        { label: 'WBC', box: [0, 0, 10, 10] },
        { label: 'Platelets', box: [50, 50, 55, 55] },
      ],
      candidates: [
        { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] },
        { label: 'RBC', score: 0.8, box: [80, 80, 90, 90] },
      ],
    },
  ];
  const m = confusionMatrix(imgs, { RBC: 0.5, WBC: 0.5, Platelets: 0.5 });
  assert.equal(m.WBC.RBC, 1);
  assert.equal(m.Platelets.background, 1);
  assert.equal(m.background.RBC, 1);
  assert.equal(m.RBC.RBC, 0);
});

test('Pearson and Bland-Altman', () => {
  close(pearson([1, 2, 3], [2, 4, 6]), 1);
  close(pearson([1, 2, 3], [3, 2, 1]), -1);
  assert.equal(pearson([1, 1], [2, 3]), null);
  const ba = blandAltman([10, 20, 30], [12, 19, 33]); // diffs 2, -1, 3: mean 4/3, sample SD sqrt(13/3)
  close(ba.bias, 4 / 3);
  close(ba.sd, Math.sqrt(((2 - 4 / 3) ** 2 + (-1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 2));
  close(ba.upper - ba.lower, 2 * 1.96 * ba.sd);
  const ag = agreement([{ file: 'a', truth: [], candidates: [] }], { RBC: 0.5, WBC: 0.5, Platelets: 0.5 });
  assert.equal(ag.RBC.pearson, null);
});

test('review band reaches down while the band still holds real cells', () => {
  const imgs: EvalImage[] = [
    {
      file: 'a',
      truth: [
        { label: 'RBC', box: [0, 0, 10, 10] },
        { label: 'RBC', box: [20, 0, 30, 10] },
      ],
      candidates: [
        { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] },
        { label: 'RBC', score: 0.42, box: [20, 0, 30, 10] },
        { label: 'RBC', score: 0.12, box: [60, 0, 70, 10] },
        { label: 'RBC', score: 0.11, box: [80, 0, 90, 10] },
        { label: 'RBC', score: 0.105, box: [100, 0, 110, 10] },
      ],
    },
  ];
  // band [0.40, 0.5) holds one real cell; going to 0.10 adds three false ones: 1/4 = 25 % still passes
  assert.equal(reviewThreshold(imgs, 'RBC', 0.5, 0.05), 0.1);
  assert.equal(reviewThreshold(imgs, 'RBC', 0.5, 0.05, 0.5), 0.4);
});

test('bestRow with a tolerance: near-equal F1 is a tie that count accuracy decides', () => {
  const row = (threshold: number, f1: number, accuracy: number) => ({
    threshold,
    f1,
    accuracy,
    precision: f1,
    recall: f1,
    counted: 0,
    truth: 0,
    tp: 0,
    fp: 0,
    fn: 0,
    imageAccuracy: accuracy,
    mae: 0,
  });
  const rows = [row(0.5, 0.907, 0.99), row(0.6, 0.909, 0.91), row(0.7, 0.85, 0.999)];
  assert.equal(bestRow(rows, 'f1').threshold, 0.6);
  assert.equal(bestRow(rows, 'f1', 0.005).threshold, 0.5);
  assert.equal(bestRow(rows, 'f1', 0.0001).threshold, 0.6);
});

test('paired bootstrap: no gap between a model and itself, a clear one against a worse model, the selection score on the images as they are', () => {
  // 40 images in two subsets, 6 red cells and 1 white cell each; model b finds every cell,
  // model a misses a red cell on every other image and adds a false white cell on every third
  const images = (miss: boolean): EvalImage[] =>
    Array.from({ length: 40 }, (_, i) => {
      const truth = [
        ...Array.from({ length: 6 }, (_, k) => ({ label: 'RBC' as const, box: [k * 50, 0, k * 50 + 40, 40] as [number, number, number, number] })),
        { label: 'WBC' as const, box: [0, 100, 80, 180] as [number, number, number, number] },
      ];
      const found = truth.filter((_, k) => !(miss && i % 2 === 0 && k === 0)).map((t) => ({ ...t, score: 0.9 }));
      if (miss && i % 3 === 0) found.push({ label: 'WBC', box: [200, 100, 280, 180], score: 0.8 });
      return { file: `f${i}.jpg`, truth, candidates: found, subset: i < 20 ? 'full-field' : 'close-up' };
    });
  const [a, b] = [images(true), images(false)];
  const same = pairedBootstrap(a, a, scoreOfParts, { rounds: 200 });
  assert.deepEqual([same.diff, same.low, same.high], [0, 0, 0]);
  const gap = pairedBootstrap(a, b, scoreOfParts, { rounds: 200 });
  assert.ok(gap.low > 0 && gap.low <= gap.diff && gap.diff <= gap.high, JSON.stringify(gap));
  // the observed difference is the selection rule's own, read from full evaluations
  const sel = (ims: EvalImage[]) =>
    selectionScore({ model: 'm', ev: evaluate(ims), parts: { 'full-field': evaluate(ims.slice(0, 20)), 'close-up': evaluate(ims.slice(20)) } });
  close(gap.diff, sel(b) - sel(a), 1e-12);
  // seeded: the same interval on every run
  assert.deepEqual(pairedBootstrap(a, b, scoreOfParts, { rounds: 200 }), gap);
  assert.throws(() => pairedBootstrap(a, b.slice(1), scoreOfParts), /same images/);
});

test('validationCurve plots the validation F1 that training logged per epoch, per subset too', () => {
  const rec = (epoch: number, f1?: number) =>
    JSON.stringify({ type: 'epoch', epoch, loss: 0.3, ...(f1 !== undefined && { val_f1: f1, 'val_f1_full-field': f1 - 1, 'val_f1_close-up': f1 + 1 }) });
  const log = [rec(1, 88.5), JSON.stringify({ type: 'step', epoch: 2, step: 9, loss: 0.2 }), rec(2, 90.25)].join('\n');
  const svg = validationCurve(log);
  assert.ok(svg);
  assert.match(svg, /Validation F1 per epoch/);
  assert.match(svg, /full-field/);
  assert.match(svg, /close-up/);
  // zoomed on the scores, not drawn from 0
  assert.doesNotMatch(svg, />0<\/text>/);
  assert.equal(validationCurve([rec(1), rec(2)].join('\n')), null);
});
