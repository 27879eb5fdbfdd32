/**
 * A reviewer's corrections on top of the model's candidates: deleted and relabelled
 * boxes, accepted or rejected uncertain cells, boxes added by hand. Pure, so the web app
 * and tests share it.
 */
import { applyThresholds } from './count.js';
import { type Box, type CellClass, type Detection, type PerClass, perClass, type Candidate, type Thresholds } from './types.js';

export interface Corrections {
  deleted: number[];
  relabeled: Record<number, CellClass>;
  accepted: number[];
  rejected: number[];
  added: { label: CellClass; box: Box }[];
}

export const noCorrections = (): Corrections => ({ deleted: [], relabeled: {}, accepted: [], rejected: [], added: [] });

export interface ReviewedDetection extends Detection {
  /** Index into the candidates, or -1 - k for the k-th added box. */
  id: number;
  /** Changed by the reviewer: relabelled, accepted from the review band, or added. */
  edited: boolean;
  /** Drawn by the reviewer (its score of 1 is no model probability). */
  added: boolean;
}

export interface Reviewed {
  detected: PerClass<number>;
  uncertainDetected: PerClass<number>;
  corrected: PerClass<number>;
  uncertain: PerClass<number>;
  detections: ReviewedDetection[];
}

export function review(cands: Candidate[], th: Thresholds, c: Corrections): Reviewed {
  const raw = applyThresholds(cands, th);
  const del = new Set(c.deleted);
  const acc = new Set(c.accepted);
  const rej = new Set(c.rejected);
  const detections: ReviewedDetection[] = [];
  cands.forEach((cand, id) => {
    const t = th.count[cand.label];
    const r = Math.min(th.review[cand.label], t);
    if (cand.score < r || del.has(id) || rej.has(id)) return;
    const label = c.relabeled[id] ?? cand.label;
    const uncertain = cand.score < t && !acc.has(id);
    detections.push({ ...cand, label, uncertain, id, edited: label !== cand.label || (cand.score < t && acc.has(id)), added: false });
  });
  for (const [k, a] of c.added.entries()) detections.push({ label: a.label, box: a.box, score: 1, uncertain: false, id: -1 - k, edited: true, added: true });
  const corrected = perClass(() => 0);
  const uncertain = perClass(() => 0);
  for (const d of detections) (d.uncertain ? uncertain : corrected)[d.label]++;
  return { detected: raw.counts, uncertainDetected: raw.uncertain, corrected, uncertain, detections };
}

/** RBC : WBC : PLT, scaled so that WBC = 1 (null without white cells). */
export function ratios(c: PerClass<number>): { rbcPerWbc: number | null; pltPerWbc: number | null; rbcPerPlt: number | null } {
  return { rbcPerWbc: c.WBC ? c.RBC / c.WBC : null, pltPerWbc: c.WBC ? c.Platelets / c.WBC : null, rbcPerPlt: c.Platelets ? c.RBC / c.Platelets : null };
}
