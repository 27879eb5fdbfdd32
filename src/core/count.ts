/** Per-class thresholds, the review band, counts and mean probabilities. */
import { classFromName } from './vocabulary.js';
import { type Candidate, type Detection, type PerClass, perClass, type Thresholds } from './types.js';

export interface CountSummary {
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  /** Mean probability of the counted cells of each class (the paper reports it); null when none. */
  meanScore: PerClass<number | null>;
  detections: Detection[];
}

/** Counted: score >= count threshold. Uncertain: review <= score < count. Others are dropped. */
export function applyThresholds(cands: Candidate[], th: Thresholds): CountSummary {
  const counts = perClass(() => 0);
  const uncertain = perClass(() => 0);
  const sums = perClass(() => 0);
  const detections: Detection[] = [];
  for (const c of cands) {
    const t = th.count[c.label];
    const r = Math.min(th.review[c.label], t);
    if (c.score >= t) {
      counts[c.label]++;
      sums[c.label] += c.score;
      detections.push({ ...c, uncertain: false });
    } else if (c.score >= r) {
      uncertain[c.label]++;
      detections.push({ ...c, uncertain: true });
    }
  }
  const meanScore = perClass((k) => (counts[k] ? sums[k] / counts[k] : null));
  return { counts, uncertain, meanScore, detections };
}

/**
 * Parse "0.4" (all classes) or "RBC=0.25,WBC=0.65,Platelets=0.35" (others keep `base`).
 * Class names are matched case-insensitively; PLT/platelet are accepted for Platelets.
 */
export function parseThresholds(spec: string, base: PerClass<number>): PerClass<number> {
  const out = { ...base };
  const s = spec.trim();
  if (/^\d*,\d+$/.test(s)) throw new Error(`bad threshold '${spec}': write the decimal point as '.', e.g. ${s.replace(',', '.')}`);
  if (/^[\d.]+$/.test(s)) {
    const v = checkProbability(Number(s), spec);
    return perClass(() => v);
  }
  if (s.split(',').every((p) => /^\s*[\d.]+\s*$/.test(p)))
    throw new Error(`bad threshold '${spec}': give one number for all classes (0.4), or name each class: RBC=0.25,WBC=0.65,Platelets=0.35`);
  const seen = new Set<string>();
  for (const part of s.split(',')) {
    const [, name, value] = /^\s*([A-Za-z]+)\s*[=:]\s*([\d.]+)\s*$/.exec(part) ?? [];
    const cls = name === undefined ? null : classFromName(name);
    if (!cls) throw new Error(`bad threshold '${part}': use 0.4 or RBC=0.25,WBC=0.65,Platelets=0.35`);
    if (seen.has(cls)) throw new Error(`bad threshold '${spec}': ${cls} is given twice`);
    seen.add(cls);
    out[cls] = checkProbability(Number(value), part);
  }
  return out;
}

function checkProbability(v: number, text: string): number {
  if (!Number.isFinite(v) || v < 0 || v > 1) throw new Error(`bad threshold '${text}': must be between 0 and 1`);
  return v;
}
