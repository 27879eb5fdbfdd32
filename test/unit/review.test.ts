/** The reviewer's corrections (web app) on top of the model's candidates. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { noCorrections, review } from '../../src/core/review.js';
import type { Candidate, Thresholds } from '../../src/core/types.js';

const th: Thresholds = { count: { RBC: 0.5, WBC: 0.6, Platelets: 0.4 }, review: { RBC: 0.3, WBC: 0.6, Platelets: 0.2 } };
const cands: Candidate[] = [
  { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] }, // 0 counted
  { label: 'RBC', score: 0.4, box: [20, 0, 30, 10] }, // 1 to review
  { label: 'WBC', score: 0.8, box: [40, 0, 60, 20] }, // 2 counted
  { label: 'Platelets', score: 0.3, box: [70, 0, 75, 5] }, // 3 to review
  { label: 'RBC', score: 0.1, box: [80, 0, 90, 10] }, // 4 below the band: dropped
];

test('without corrections: detected = corrected, the band is uncertain, nothing edited', () => {
  const r = review(cands, th, noCorrections());
  assert.deepEqual(r.detected, { RBC: 1, WBC: 1, Platelets: 0 });
  assert.deepEqual(r.corrected, r.detected);
  assert.deepEqual(r.uncertain, { RBC: 1, WBC: 0, Platelets: 1 });
  assert.equal(r.detections.length, 4);
  assert.ok(r.detections.every((d) => !d.edited && !d.added));
});

test('accept and reject cells to review; delete and relabel counted ones; add a missed one', () => {
  const c = {
    ...noCorrections(),
    accepted: [1],
    rejected: [3],
    deleted: [0],
    relabeled: { 2: 'Platelets' as const },
    added: [{ label: 'WBC' as const, box: [1, 1, 9, 9] as [number, number, number, number] }],
  };
  const r = review(cands, th, c);
  // RBC: 0 deleted, 1 accepted -> 1; WBC: 2 relabelled away, one added -> 1; platelets: 3 rejected, 2 relabelled in -> 1
  assert.deepEqual(r.corrected, { RBC: 1, WBC: 1, Platelets: 1 });
  assert.deepEqual(r.uncertain, { RBC: 0, WBC: 0, Platelets: 0 });
  // what the model detected does not change
  assert.deepEqual(r.detected, { RBC: 1, WBC: 1, Platelets: 0 });
  const byId = new Map(r.detections.map((d) => [d.id, d]));
  assert.equal(byId.has(0), false);
  assert.equal(byId.has(3), false);
  assert.deepEqual([byId.get(1)!.edited, byId.get(1)!.added, byId.get(1)!.uncertain], [true, false, false]);
  assert.deepEqual([byId.get(2)!.label, byId.get(2)!.edited, byId.get(2)!.score], ['Platelets', true, 0.8]);
  const added = byId.get(-1)!;
  assert.deepEqual([added.label, added.added, added.edited, added.uncertain], ['WBC', true, true, false]);
});

test('a threshold change re-derives the band under the same corrections', () => {
  const c = { ...noCorrections(), accepted: [1] };
  const lower: Thresholds = { ...th, count: { ...th.count, RBC: 0.35 } };
  const r = review(cands, lower, c);
  // cell 1 (0.4) is now counted by the model itself: accepted or not, it counts once
  assert.equal(r.corrected.RBC, 2);
  assert.equal(r.detected.RBC, 2);
});
