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

/** Greedy NMS on one class; returns kept indices in descending score order. */
export function nms(boxes: Box[], scores: number[], iouThreshold: number): number[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  const keep: number[] = [];
  const suppressed = new Uint8Array(boxes.length);
  for (let oi = 0; oi < order.length; oi++) {
    const i = order[oi];
    if (suppressed[i]) continue;
    keep.push(i);
    const a = boxes[i];
    const areaA = (a[2] - a[0]) * (a[3] - a[1]);
    for (let oj = oi + 1; oj < order.length; oj++) {
      const j = order[oj];
      if (suppressed[j]) continue;
      const b = boxes[j];
      const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
      const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
      if (iw <= 0 || ih <= 0) continue;
      const inter = iw * ih;
      const iou = inter / (areaA + (b[2] - b[0]) * (b[3] - b[1]) - inter);
      if (iou > iouThreshold) suppressed[j] = 1;
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
      kept.push(group[i]);
  }
  kept.sort((a, b) => b.score - a.score);
  return kept.slice(0, maxDetections);
}

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
  const topk = meta.postprocess.topk_per_level;
  const all: Candidate[] = [];
  grids.forEach((g, li) => {
    const base = baseAnchors(meta.anchors.levels[li]);
    const A = g.anchorsPerCell;
    const start = g.offset * K;
    const end = (g.offset + g.height * g.width * A) * K;
    // keep scores above the floor, then the top-k of this level (torchvision order)
    const idx: number[] = [];
    for (let i = start; i < end; i++) if (scores[i] > floor) idx.push(i - start);
    idx.sort((a, b) => scores[start + b] - scores[start + a] || a - b);
    if (idx.length > topk) idx.length = topk;
    for (const flat of idx) {
      const anchorIdx = Math.floor(flat / K);
      const label = CLASSES[flat % K];
      const a = anchorIdx % A;
      const cell = Math.floor(anchorIdx / A);
      const gx = cell % g.width;
      const gy = Math.floor(cell / g.width);
      const sx = gx * g.stride;
      const sy = gy * g.stride;
      const ax1 = f32(sx + base[a * 4]);
      const ay1 = f32(sy + base[a * 4 + 1]);
      const ax2 = f32(sx + base[a * 4 + 2]);
      const ay2 = f32(sy + base[a * 4 + 3]);
      const aw = f32(ax2 - ax1);
      const ah = f32(ay2 - ay1);
      const cx = f32(ax1 + f32(0.5 * aw));
      const cy = f32(ay1 + f32(0.5 * ah));
      const d = (g.offset + anchorIdx) * 4;
      const dx = f32(deltas[d] / wx);
      const dy = f32(deltas[d + 1] / wy);
      const dw = Math.min(f32(deltas[d + 2] / ww), clampV);
      const dh = Math.min(f32(deltas[d + 3] / wh), clampV);
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
      all.push({ label, score: scores[start + flat], box });
    }
  });
  return classwiseNms(all, meta.postprocess.nms_iou, meta.postprocess.max_detections);
}
