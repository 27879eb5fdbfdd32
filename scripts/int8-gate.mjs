#!/usr/bin/env node
/**
 * The int8 release gate: the int8 model may ship only if, on the validation split, mAP@0.5
 * and every class's F1 at the model's thresholds are within 0.5 points of the fp32 model,
 * on the whole split and on each subset (full-field, close-up).
 *   node scripts/int8-gate.mjs FP32.evaluate.json INT8.evaluate.json   (exit 1 when it fails)
 */
import { readFileSync } from 'node:fs';

const [fp, q] = process.argv.slice(2).map((f) => JSON.parse(readFileSync(f, 'utf8')));
const TOL = 0.5;
const parts = (d) => ({ all: d, ...(d.subsets ?? {}) });
const rows = [];
let ok = true;
for (const [name, a] of Object.entries(parts(fp))) {
  const b = parts(q)[name];
  const check = (what, x, y) => {
    const diff = 100 * (y - x);
    const pass = diff >= -TOL;
    ok &&= pass;
    rows.push(
      `${name.padEnd(10)} ${what.padEnd(14)} ${(100 * x).toFixed(2).padStart(6)} -> ${(100 * y).toFixed(2).padStart(6)}  ${diff >= 0 ? '+' : ''}${diff.toFixed(2)}${pass ? '' : '  FAIL'}`,
    );
  };
  check('mAP@0.5', a.evaluation.mAP50, b.evaluation.mAP50);
  for (const c of Object.keys(a.atModel)) check(`F1 ${c}`, a.atModel[c].f1, b.atModel[c].f1);
}
console.log(`int8 gate (fp32 -> int8, points; fails below -${TOL}):\n${rows.join('\n')}\n${ok ? 'PASS' : 'FAIL'}`);
process.exit(ok ? 0 : 1);
