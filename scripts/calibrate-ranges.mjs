#!/usr/bin/env node
/**
 * Activation ranges for static int8 quantisation (scripts/quantize.py reads them).
 *
 *   node scripts/calibrate-ranges.mjs MODEL.onnx --out RANGES.json [--n 64] [--threads 1]
 *        [--data /work/shared/datasets] [--val training/splits/val.json]
 *
 * Makes an in-memory copy of MODEL whose every activation that quantize.py may quantise
 * (the graph input, every Conv input and the outputs of Conv, Relu, Add and Resize) is
 * also a graph output, runs it with onnxruntime-node over N TRAINING images and writes,
 * per tensor, min, max, max |x| and percentiles of |x| (pooled over all images, from a
 * histogram of the float32 bit patterns: 256 bins per octave, reported at the bin's upper
 * edge).
 *
 * Images: cbc/images and txl-pbc/images/{train,val} of the shared data set, minus every
 * image of the validation split (--val, COCO JSON) and minus every image that shares a
 * smear unit (bccd-groups.csv; overlapping fields merged, as in training) with one: a
 * copy of a validation image is a validation image. N are taken in a fixed order (md5 of
 * the file name). Preprocessing is hemocount's (src/adapters/image.ts decodeRgb +
 * src/core/pipeline.ts toTensor): EXIF rotation, flatten on white, sRGB, native
 * resolution, (x * scale - mean) / std per RGB channel, NCHW, zero-padded (pad_value) to
 * a multiple of pad_multiple, all read from the model's metadata.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, realpathSync, writeFileSync, existsSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { decodeRgb } from '../dist/src/adapters/image.js';
import { readMetadata } from '../dist/src/adapters/onnx.js';
import { paddedSize } from '../dist/src/core/decode.js';
import { applyGains, backgroundColour, toTensor, whiteBalanceGains } from '../dist/src/core/pipeline.js';

const { values: a, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string' },
    n: { type: 'string', default: '64' },
    threads: { type: 'string', default: '1' },
    data: { type: 'string', default: '/work/shared/datasets' },
    val: { type: 'string', default: 'training/splits/val.json' },
    percentiles: { type: 'string', default: '99.9,99.99,99.999' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help || positionals.length !== 1 || !a.out) {
  console.error('usage: node scripts/calibrate-ranges.mjs MODEL.onnx --out RANGES.json [--n 64] [--threads 1] [--data DIR] [--val VAL.json]');
  process.exit(a.help ? 0 : 2);
}
const modelPath = positionals[0];
const N = Number(a.n);
const PCTS = a.percentiles.split(',').map(Number);

// ---- protobuf: just enough to list nodes and append graph outputs -------------------------
function readVarint(buf, pos) {
  let v = 0,
    mul = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated protobuf varint');
    const b = buf[pos++];
    v += (b & 0x7f) * mul;
    if (b < 0x80) return [v, pos];
    mul *= 128;
  }
}
function writeVarint(v) {
  const out = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
function fields(buf) {
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const [key, p1] = readVarint(buf, pos);
    const no = Math.floor(key / 8),
      wire = key & 7;
    pos = p1;
    let body;
    if (wire === 0) pos = readVarint(buf, pos)[1];
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [len, p2] = readVarint(buf, pos);
      body = buf.subarray(p2, p2 + len);
      pos = p2 + len;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
    out.push({ no, start, end: pos, body });
  }
  return out;
}
const dec = new TextDecoder();
const enc = new TextEncoder();
const strs = (buf, no) =>
  fields(buf)
    .filter((f) => f.no === no && f.body)
    .map((f) => dec.decode(f.body));
const lenField = (no, body) => Uint8Array.from([...writeVarint(no * 8 + 2), ...writeVarint(body.length), ...body]);
const concat = (parts) => {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

const bytes = new Uint8Array(readFileSync(modelPath));
const top = fields(bytes);
const graphField = top.find((f) => f.no === 7);
const meta = readMetadata(bytes, modelPath);
if (!graphField || !meta) throw new Error(`${modelPath}: no graph or no hemocount metadata`);
const gf = fields(graphField.body);
const initializers = new Set(gf.filter((f) => f.no === 5).map((f) => strs(f.body, 8)[0]));
const graphInputs = gf
  .filter((f) => f.no === 11)
  .map((f) => strs(f.body, 1)[0])
  .filter((n) => !initializers.has(n));
const graphOutputs = new Set(gf.filter((f) => f.no === 12).map((f) => strs(f.body, 1)[0]));
const nodes = gf.filter((f) => f.no === 1).map((f) => ({ op: strs(f.body, 4)[0], inputs: strs(f.body, 1), outputs: strs(f.body, 2) }));

const wanted = [];
const want = (t) => {
  if (t && !initializers.has(t) && !wanted.includes(t)) wanted.push(t);
};
for (const n of nodes) {
  if (n.op === 'Conv') want(n.inputs[0]);
  if (['Conv', 'Relu', 'Add', 'Resize'].includes(n.op)) n.outputs.forEach(want);
}
const extra = wanted.filter((t) => !graphOutputs.has(t) && !graphInputs.includes(t));
// ValueInfoProto { name = 1; type = 2 { tensor_type = 1 { elem_type = 1 (FLOAT) } } }
const outputsBytes = extra.map((t) => lenField(12, concat([lenField(1, enc.encode(t)), lenField(2, lenField(1, Uint8Array.from([8, 1])))])));
const graph = concat([graphField.body, ...outputsBytes]);
const augmented = concat([...top.map((f) => (f === graphField ? lenField(7, graph) : bytes.subarray(f.start, f.end)))]);

// ---- calibration images --------------------------------------------------------------
const root = realpathSync(a.data);
const rel = (p) => relative(root, realpathSync(p)).split('\\').join('/');
const valJson = JSON.parse(readFileSync(a.val, 'utf8'));
const valImages = new Set(valJson.images.map((im) => rel(resolve(dirname(a.val), im.file_name))));

// bccd-groups.csv: group ids, merged with their overlapping-field groups (union-find)
const parent = new Map();
const find = (g) => {
  if (!parent.has(g)) parent.set(g, g);
  while (parent.get(g) !== g) {
    parent.set(g, parent.get(parent.get(g)));
    g = parent.get(g);
  }
  return g;
};
const rows = readFileSync(join(root, 'bccd-groups.csv'), 'utf8').trim().split(/\r?\n/);
const head = rows[0].split(',');
const col = (name) => head.indexOf(name);
const unitRows = rows.slice(1).map((r) => r.split(','));
for (const r of unitRows) {
  find(r[col('group')]);
  for (const o of (r[col('overlapping_field_groups')] || '')
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean))
    parent.set(find(o), find(r[col('group')]));
}
const unitOf = new Map(unitRows.map((r) => [r[col('image')], `g${find(r[col('group')])}`]));
const unit = (p) => unitOf.get(p) ?? p;
const valUnits = new Set([...valImages].map(unit));

const candidates = [];
for (const d of ['cbc/images', 'txl-pbc/images/train', 'txl-pbc/images/val']) {
  if (!existsSync(join(root, d))) continue;
  for (const f of readdirSync(join(root, d))
    .filter((x) => /\.(jpe?g|png)$/i.test(x))
    .sort())
    candidates.push(`${d}/${f}`);
}
const eligible = candidates.filter((p) => !valImages.has(p) && !valUnits.has(unit(p)));
const md5 = (s) => createHash('md5').update(s).digest('hex');
const chosen = eligible.sort((x, y) => (md5(basename(x)) < md5(basename(y)) ? -1 : 1)).slice(0, N);
if (chosen.some((p) => valImages.has(p))) throw new Error('a validation image was chosen (bug)');
console.error(`${candidates.length} images, ${candidates.length - eligible.length} left out (validation images and their smear units), ${chosen.length} used`);

// ---- preprocessing, as hemocount does it ---------------------------------------------------
// hemocount's own decoding and tensor layout (dist/ is built by `npm run build`), so the
// calibrated ranges are those of the tensors that `count` feeds the network
async function tensorOf(path) {
  let img = await decodeRgb(path);
  // a model trained on white-balanced images counts white-balanced ones (src/core/detect.ts)
  if (meta.input.white_balance === 'background') img = applyGains(img, whiteBalanceGains(backgroundColour(img)));
  const [ph, pw] = paddedSize(meta, img.height, img.width);
  const x = toTensor(img, meta, ph, pw);
  if (!(x.data instanceof Float32Array)) throw new Error(`${modelPath}: ranges are calibrated on a float model, not an 8-bit one`);
  return new ort.Tensor('float32', x.data, x.dims);
}

// ---- statistics ----------------------------------------------------------------------------
// |x| histogram keyed by bits 15-30 of the float32 pattern (sign dropped): 8 exponent
// bits + 8 mantissa bits, i.e. 256 bins per power of two (0.4 % wide).
const stats = new Map(wanted.map((t) => [t, { min: Infinity, max: -Infinity, count: 0, hist: new Float64Array(1 << 16) }]));
function update(s, data) {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const h = s.hist;
  let mn = s.min,
    mx = s.max;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < mn) mn = v;
    if (v > mx) mx = v;
    h[(bits[i] & 0x7fffffff) >>> 15]++;
  }
  s.min = mn;
  s.max = mx;
  s.count += data.length;
}
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const upperEdge = (bin) => {
  u32[0] = ((bin + 1) << 15) >>> 0;
  return f32[0];
};
function percentile(s, p) {
  const target = (p / 100) * s.count;
  let c = 0;
  for (let b = 0; b < s.hist.length; b++) {
    c += s.hist[b];
    if (c >= target) return Math.min(upperEdge(b), Math.max(Math.abs(s.min), Math.abs(s.max)));
  }
  return Math.max(Math.abs(s.min), Math.abs(s.max));
}

const threads = Number(a.threads);
const session = await ort.InferenceSession.create(augmented, { graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1 });
const inputName = graphInputs[0];
const t0 = performance.now();
for (const [i, p] of chosen.entries()) {
  const x = await tensorOf(join(root, p));
  const out = await session.run({ [inputName]: x });
  if (i === 0) {
    const miss = wanted.filter((t) => t !== inputName && !out[t]);
    if (miss.length) throw new Error(`not fetched: ${miss.join(', ')}`);
  }
  update(stats.get(inputName), x.data);
  for (const t of wanted) if (t !== inputName) update(stats.get(t), out[t].data);
  if ((i + 1) % 8 === 0) console.error(`${i + 1}/${chosen.length} images, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}
await session.release();

const tensors = {};
for (const [t, s] of stats) {
  const abs = {};
  for (const p of PCTS) abs[`p${p}`] = percentile(s, p);
  tensors[t] = { min: s.min, max: s.max, absmax: Math.max(Math.abs(s.min), Math.abs(s.max)), abs_percentiles: abs, values: s.count };
}
const doc = {
  format: 'hemocount-ranges/1',
  model: { file: modelPath, sha256: createHash('sha256').update(bytes).digest('hex') },
  data: { root: a.data, excluded: `${a.val} images and their bccd-groups.csv units`, images: chosen },
  preprocessing: meta.input,
  percentiles_of: '|x| pooled over all images (histogram bin upper edge)',
  date: new Date().toISOString(),
  tensors,
};
writeFileSync(a.out, `${JSON.stringify(doc, null, 1)}\n`);
console.error(`${Object.keys(tensors).length} tensors -> ${a.out}`);
