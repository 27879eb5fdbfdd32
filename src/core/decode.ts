/**
 * RetinaNet post-processing, step for step as torchvision does it
 * (AnchorGenerator, BoxCoder.decode_single, RetinaNet.postprocess_detections),
 * in float32 so the parity fixture matches to the pixel.
 */
import { type AnchorLevel, type Box, type Candidate, CLASSES, type ModelMetadata } from './types.js';

const f32 = Math.fround;

/** torch.round: half to even. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Base anchors of one level, centred on 0: aspect ratio outer, size inner. */
export function baseAnchors(level: AnchorLevel): Float32Array {
  const out: number[] = [];
  for (const ar of level.aspect_ratios) {
    const h = f32(Math.sqrt(f32(ar)));
    const w = f32(1 / h);
    for (const s of level.sizes) {
      const ws = f32(w * f32(s));
      const hs = f32(h * f32(s));
      out.push(roundHalfEven(f32(-ws / 2)), roundHalfEven(f32(-hs / 2)), roundHalfEven(f32(ws / 2)), roundHalfEven(f32(hs / 2)));
    }
  }
  return Float32Array.from(out);
}

export interface LevelGrid {
  height: number;
  width: number;
  stride: number;
  anchorsPerCell: number;
  /** Index of this level's first anchor in the network's concatenated output. */
  offset: number;
}

/** Feature-map sizes for a padded input: each level halves (ceil) the one before. */
export function levelGrids(meta: ModelMetadata, paddedH: number, paddedW: number): LevelGrid[] {
  let offset = 0;
  return meta.anchors.levels.map((lv) => {
    const height = Math.ceil(paddedH / lv.stride);
    const width = Math.ceil(paddedW / lv.stride);
    const anchorsPerCell = lv.sizes.length * lv.aspect_ratios.length;
    const g = { height, width, stride: lv.stride, anchorsPerCell, offset };
    offset += height * width * anchorsPerCell;
    return g;
  });
}

export function paddedSize(meta: ModelMetadata, h: number, w: number): [number, number] {
  const m = meta.input.pad_multiple;
  return [Math.ceil(h / m) * m, Math.ceil(w / m) * m];
}

/**
 * Greedy NMS on one class; returns kept indices in descending score order (ties: lower index
 * first). A box is kept when no already kept box overlaps it by more than the threshold.
 */
export function nms(boxes: Box[], scores: number[], iouThreshold: number): number[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const flat = new Float64Array(boxes.length * 4);
  for (const [i, b] of boxes.entries()) flat.set(b, i * 4);
  return greedyNms(flat, order, iouThreshold);
}

/**
 * Greedy NMS over the boxes at 4i..4i+3 of `boxes`, visited in `order` (best first): the same
 * result as torchvision's pairwise loop, but each box is compared only with the kept boxes in
 * the grid cells it covers, so a large smear's tens of thousands of candidates merge in time
 * linear in their number (cells are small against the image).
 */
function greedyNms(boxes: ArrayLike<number>, order: ArrayLike<number>, iouThreshold: number): number[] {
  const keep: number[] = [];
  const n = order.length;
  if (n === 0) return keep;
  // a box with a coordinate that is no finite number overlaps nothing (its IoU is 0 or NaN,
  // never above the threshold): kept, and left out of the grid
  const finite = (o: number) => Number.isFinite(boxes[o]! + boxes[o + 1]! + boxes[o + 2]! + boxes[o + 3]!);
  // grid cell: twice the median box side, so a typical box touches at most 4 cells
  const sides: number[] = [];
  let x0 = Infinity;
  let y0 = Infinity;
  for (let j = 0; j < n; j++) {
    const o = order[j]! * 4;
    if (!finite(o)) continue;
    sides.push(Math.max(boxes[o + 2]! - boxes[o]!, boxes[o + 3]! - boxes[o + 1]!));
    x0 = Math.min(x0, boxes[o]!);
    y0 = Math.min(y0, boxes[o + 1]!);
  }
  const cell = Math.max(1, 2 * (Float64Array.from(sides).sort()[sides.length >> 1] ?? 1));
  // cell keys packed in one number; 2^20 columns is far more than any image needs
  const grid = new Map<number, number[]>();
  for (let j = 0; j < n; j++) {
    const i = order[j]!;
    const o = i * 4;
    if (!finite(o)) {
      keep.push(i);
      continue;
    }
    const bx1 = boxes[o]!;
    const by1 = boxes[o + 1]!;
    const bx2 = boxes[o + 2]!;
    const by2 = boxes[o + 3]!;
    const areaB = (bx2 - bx1) * (by2 - by1);
    const gx1 = Math.floor((bx1 - x0) / cell);
    const gy1 = Math.floor((by1 - y0) / cell);
    const gx2 = Math.floor((bx2 - x0) / cell);
    const gy2 = Math.floor((by2 - y0) / cell);
    let suppressed = false;
    search: for (let gy = gy1; gy <= gy2; gy++) {
      for (let gx = gx1; gx <= gx2; gx++) {
        const list = grid.get(gy * 1048576 + gx);
        if (!list) continue;
        for (const k of list) {
          const q = k * 4;
          const iw = Math.min(boxes[q + 2]!, bx2) - Math.max(boxes[q]!, bx1);
          const ih = Math.min(boxes[q + 3]!, by2) - Math.max(boxes[q + 1]!, by1);
          if (iw <= 0 || ih <= 0) continue;
          const inter = iw * ih;
          if (inter / ((boxes[q + 2]! - boxes[q]!) * (boxes[q + 3]! - boxes[q + 1]!) + areaB - inter) > iouThreshold) {
            suppressed = true;
            break search;
          }
        }
      }
    }
    if (suppressed) continue;
    keep.push(i);
    for (let gy = gy1; gy <= gy2; gy++) {
      for (let gx = gx1; gx <= gx2; gx++) {
        const key = gy * 1048576 + gx;
        const list = grid.get(key);
        if (list) list.push(i);
        else grid.set(key, [i]);
      }
    }
  }
  return keep;
}

/** Class-wise NMS over candidates, best first, capped at maxDetections. */
export function classwiseNms<T extends Candidate>(cands: T[], iou: number, maxDetections = Infinity): T[] {
  const kept: T[] = [];
  for (const label of CLASSES) {
    const group = cands.filter((c) => c.label === label);
    for (const i of nms(
      group.map((c) => c.box),
      group.map((c) => c.score),
      iou,
    ))
      kept.push(group[i]!);
  }
  kept.sort((a, b) => b.score - a.score);
  return kept.slice(0, maxDetections);
}

const INDEX_BITS = 2 ** 21;

/**
 * topAbove's keys, reused (it runs once per level and pass, synchronously). Not re-entrant:
 * its `order` callback must not call topAbove (interleavedOffset, the only one, is pure).
 */
let scratch = new Float64Array(4096);
const grown = (a: Float64Array) => {
  const b = new Float64Array(2 * a.length);
  b.set(a);
  return b;
};

/**
 * Moves the k smallest of keys[0, n) to keys[0, k), in no order (Hoare's quickselect,
 * median-of-three pivots): a field has ~11,000 scores above the floor and keeps 1000 a level,
 * so selecting before sorting sorts about a third of them.
 */
function selectSmallest(keys: Float64Array, k: number): void {
  let lo = 0;
  let hi = keys.length - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    const [x, y, z] = [keys[lo]!, keys[mid]!, keys[hi]!];
    const pivot = Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (keys[i]! < pivot) i++;
      while (keys[j]! > pivot) j--;
      if (i <= j) {
        const t = keys[i]!;
        keys[i++] = keys[j]!;
        keys[j--] = t;
      }
    }
    if (k - 1 <= j) hi = j;
    else if (k - 1 >= i) lo = i;
    else return;
  }
}

/**
 * Offsets i - start of the values in [start, end) above the floor, by value descending and
 * offset ascending (torchvision's order), at most k. Each value becomes one float64 key,
 * its float32 bits (order-preserving for non-negative floats) inverted above the offset, so
 * the engine's numeric sort orders them: 2-3x faster than a comparator on thousands. Keys
 * are distinct (the offset is in them), so selecting the k smallest first is exact.
 * `order`, when given, maps a position to the offset that orders ties and is returned (a
 * planar output's position to torchvision's interleaved offset).
 */
export function topAbove(v: Float32Array, start: number, end: number, floor: number, k: number, order?: (p: number) => number): number[] {
  const n = end - start;
  const at = order ?? ((p: number) => p);
  let out: number[];
  if (n <= INDEX_BITS && floor >= 0) {
    const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
    let above = 0;
    // one pass over the scores (a field has 184,000) into a buffer kept between calls
    for (let i = start; i < end; i++)
      if (v[i]! > floor) {
        if (above === scratch.length) scratch = grown(scratch);
        scratch[above++] = (0x7fffffff - bits[i]!) * INDEX_BITS + at(i - start);
      }
    const keys = scratch.subarray(0, above);
    if (above > k) selectSmallest(keys, k);
    const sorted = (above > k ? keys.subarray(0, k) : keys).sort();
    out = Array.from(sorted, (key) => key % INDEX_BITS);
  } else {
    const pos: number[] = [];
    for (let i = start; i < end; i++) if (v[i]! > floor) pos.push(i - start);
    pos.sort((a, b) => v[start + b]! - v[start + a]! || at(a) - at(b));
    if (pos.length > k) pos.length = k;
    out = pos.map(at);
  }
  return out;
}

/**
 * Output layouts. 'interleaved' (torchvision's, and models of format 1): per
 * level y, x, anchor, then class (or box coordinate) fastest. 'planar': per level anchor,
 * class (or coordinate), y, x, each convolution's own output, which spares the graph a
 * transpose per level and head (2-9 % of the fp32 forward pass in one-off timings). Candidates are
 * ordered by torchvision's interleaved offset either way (ties, and the parity fixture).
 */
const interleavedOffset = (hw: number, A: number, K: number) => (p: number) => {
  const cell = p % hw;
  const ak = (p - cell) / hw;
  const c = ak % K;
  return (cell * A + (ak - c) / K) * K + c;
};

/**
 * Network outputs -> candidates in image pixels.
 * scores: [anchors * classes] probabilities; deltas: [anchors * 4]; (h, w): the unpadded image.
 */
export function decodeDetections(
  meta: ModelMetadata,
  scores: Float32Array,
  deltas: Float32Array,
  h: number,
  w: number,
  floor = meta.postprocess.score_floor,
): Candidate[] {
  const [ph, pw] = paddedSize(meta, h, w);
  const grids = levelGrids(meta, ph, pw);
  const K = meta.classes.length;
  const [wx, wy, ww, wh] = meta.box_coder.weights;
  const clampV = meta.box_coder.clamp;
  const topk = perArea(meta.postprocess.topk_per_level, ph, pw);
  const planar = meta.outputs?.layout === 'planar';
  const all: Candidate[] = [];
  for (const [li, level] of meta.anchors.levels.entries()) {
    const g = grids[li]!;
    const base = baseAnchors(level);
    const A = g.anchorsPerCell;
    const start = g.offset * K;
    const end = (g.offset + g.height * g.width * A) * K;
    const hw = g.height * g.width;
    const d0 = g.offset * 4;
    // keep scores above the floor, then the top-k of this level (torchvision order)
    for (const flat of topAbove(scores, start, end, floor, topk, planar ? interleavedOffset(hw, A, K) : undefined)) {
      const anchorIdx = Math.floor(flat / K);
      const k = flat % K;
      const label = CLASSES[k]!;
      const a = anchorIdx % A;
      const cell = Math.floor(anchorIdx / A);
      // where this anchor's score and deltas are (delta c at d + c * step)
      const s = planar ? (a * K + k) * hw + cell : flat;
      const d = d0 + (planar ? a * 4 * hw + cell : anchorIdx * 4);
      const step = planar ? hw : 1;
      const gx = cell % g.width;
      const gy = Math.floor(cell / g.width);
      const sx = gx * g.stride;
      const sy = gy * g.stride;
      const ax1 = f32(sx + base[a * 4]!);
      const ay1 = f32(sy + base[a * 4 + 1]!);
      const ax2 = f32(sx + base[a * 4 + 2]!);
      const ay2 = f32(sy + base[a * 4 + 3]!);
      const aw = f32(ax2 - ax1);
      const ah = f32(ay2 - ay1);
      const cx = f32(ax1 + f32(0.5 * aw));
      const cy = f32(ay1 + f32(0.5 * ah));
      const dx = f32(deltas[d]! / wx);
      const dy = f32(deltas[d + step]! / wy);
      const dw = Math.min(f32(deltas[d + 2 * step]! / ww), clampV);
      const dh = Math.min(f32(deltas[d + 3 * step]! / wh), clampV);
      const pcx = f32(f32(dx * aw) + cx);
      const pcy = f32(f32(dy * ah) + cy);
      const pw2 = f32(0.5 * f32(f32(Math.exp(dw)) * aw));
      const ph2 = f32(0.5 * f32(f32(Math.exp(dh)) * ah));
      const box: Box = [
        Math.min(Math.max(f32(pcx - pw2), 0), w),
        Math.min(Math.max(f32(pcy - ph2), 0), h),
        Math.min(Math.max(f32(pcx + pw2), 0), w),
        Math.min(Math.max(f32(pcy + ph2), 0), h),
      ];
      all.push({ label, score: scores[start + s]!, box });
    }
  }
  return classwiseNms(all, meta.postprocess.nms_iou, perArea(meta.postprocess.max_detections, ph, pw));
}

/** The padded training field (640 x 480 -> 640 x 512): the area torchvision's caps are sized for. */
export const FIELD_AREA = 640 * 512;

/**
 * torchvision's caps (top-k per level, detections per image) are per image; a larger image or
 * tile holds more cells, so above one field's area the caps grow with the area, keeping the
 * density a field has. (They used to grow per megapixel, a third of that density: on a dense
 * large smear the weakest red cells were cut before NMS, about one in 25.) An image padded to
 * one field or less (a 640 x 480 field, the parity fixture) gets torchvision's caps.
 */
function perArea(cap: number, ph: number, pw: number): number {
  return Math.max(cap, Math.ceil((cap * ph * pw) / FIELD_AREA));
}
