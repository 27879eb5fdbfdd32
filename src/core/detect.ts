/**
 * The one detection path, for Node and the browser alike: a pixel source and a network
 * runner in, candidates in original-image pixels out. It chooses whole image or tiles,
 * estimates the magnification and rescales (`scale: 'auto'`), and optionally averages
 * flipped passes (test-time augmentation).
 */
import { iou } from './metrics.js';
import { classwiseNms } from './decode.js';
import { backgroundColour, detectPixels, detectTiled, type Pixels, type Runner, type Tiling, WHOLE_IMAGE_PIXELS, whiteBalanceGains } from './pipeline.js';
import type { Box, Candidate, ModelMetadata } from './types.js';

export interface PixelSource {
  width: number;
  height: number;
  /** A region of the original image, in original pixels. */
  read(left: number, top: number, width: number, height: number): Promise<Pixels>;
}

export interface DetectOptions {
  /** 'auto' (default): estimate the cells' size and rescale to the training scale; 1: off; a number: forced. */
  scale?: 'auto' | number;
  /** Average the network over the image and its horizontal and vertical flips (3 passes). */
  tta?: boolean;
  /** Tile geometry for images above WHOLE_IMAGE_PIXELS (default 1536 px tiles, 256 px overlap). */
  tiling?: Tiling;
  /**
   * The lowest score the caller will use (e.g. its lowest review edge): weaker candidates are
   * dropped before box decoding and NMS, which is faster and leaves every candidate above it
   * as it was (a greedy NMS never lets a weaker box suppress a stronger one). Ignored with
   * tta, whose averaged scores need the weak ones; never above what `scale: 'auto'` measures.
   */
  floor?: number;
  /**
   * Make the smear's background grey before the network (the lamp's colour, where the camera
   * was not white-balanced for it): per-channel gains from the background's colour. Default:
   * what the model was trained with (its metadata's input.white_balance).
   */
  whiteBalance?: boolean;
}

export interface ScaleEstimate {
  /** Median size (square root of box area, px) of the confidently detected reference cells, at 1x. */
  cellPx: number | null;
  cells: number;
  basis: 'RBC' | 'WBC' | 'none';
}

export interface Detected {
  width: number;
  height: number;
  candidates: Candidate[];
  tiles: number;
  /** The factor the image was resized by before the network (1 = native). */
  scale: number;
  estimate?: ScaleEstimate;
  /** The per-channel gains (R, G, B) applied to the pixels, when white-balanced. */
  whiteBalance?: [number, number, number];
}

/**
 * What the training data's cells measure (median square root of box area per image) when
 * the model file does not say: red cells 96 px on the full fields (64-140 px across the
 * training sets; the 575 x 575 close-ups' 125 px are counted best as they are, hence the
 * band's top); white cells about twice a red cell. Boxes regress towards familiar sizes,
 * so the measured size moves less than the true one: log(measured) changes by `response`
 * x log(true) around the reference (about 0.65, from the sizes measured on validation
 * images resized 0.5x-2x), and the factor undoes that. bench/accuracy.ts measures the result.
 */
export const DEFAULT_SCALE = { reference_px: 96, min_px: 78, max_px: 135, wbc_to_rbc: 2.0, min_score: 0.4, response: 0.65 };

export function scaleModel(meta: ModelMetadata) {
  return { ...DEFAULT_SCALE, ...(meta.scale ?? {}) };
}

/** The factor to apply to an image whose candidates are `cands` (1 = keep); `at` = the factor those were found at. */
export function estimateScale(meta: ModelMetadata, cands: Candidate[], at = 1): { factor: number; estimate: ScaleEstimate } {
  const s = scaleModel(meta);
  const size = (b: Box) => at * Math.sqrt(Math.max(0, b[2] - b[0]) * Math.max(0, b[3] - b[1]));
  // only called with at least one value (see below)
  const median = (v: number[]) => {
    const a = [...v].sort((x, y) => x - y);
    return a.length % 2 ? a[(a.length - 1) / 2]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
  };
  const rbc = cands.filter((c) => c.label === 'RBC' && c.score >= s.min_score).map((c) => size(c.box));
  const wbc = cands.filter((c) => c.label === 'WBC' && c.score >= s.min_score).map((c) => size(c.box));
  let estimate: ScaleEstimate = { cellPx: null, cells: 0, basis: 'none' };
  if (rbc.length >= 5) estimate = { cellPx: median(rbc), cells: rbc.length, basis: 'RBC' };
  else if (wbc.length >= 1) estimate = { cellPx: median(wbc) / s.wbc_to_rbc, cells: wbc.length, basis: 'WBC' };
  const px = estimate.cellPx;
  // inside the range the model was trained on, native resolution is best
  if (px === null || (px >= s.min_px && px <= s.max_px)) return { factor: 1, estimate };
  return { factor: toReference(meta, px), estimate };
}

/** The factor that brings cells measured at `px` to the reference size (undoing the measurement's bias, `response`). */
function toReference(meta: ModelMetadata, px: number, response = scaleModel(meta).response): number {
  return (scaleModel(meta).reference_px / px) ** (1 / response);
}

/** Antialiased bilinear resampling (a triangle filter widened when shrinking), RGB(A) -> RGB. */
export function resizePixels(img: Pixels, width: number, height: number): Pixels {
  const ch = img.channels;
  const weights = (nIn: number, nOut: number) => {
    const f = nOut / nIn;
    const support = Math.max(1, 1 / f);
    return Array.from({ length: nOut }, (_, o) => {
      const centre = (o + 0.5) / f - 0.5;
      const lo = Math.max(0, Math.ceil(centre - support));
      const hi = Math.min(nIn - 1, Math.floor(centre + support));
      const idx: number[] = [];
      const w: number[] = [];
      for (let i = lo; i <= hi; i++) {
        const v = 1 - Math.abs(centre - i) / support;
        if (v > 0) {
          idx.push(i);
          w.push(v);
        }
      }
      if (!idx.length) {
        idx.push(Math.min(nIn - 1, Math.max(0, Math.round(centre))));
        w.push(1);
      }
      const sum = w.reduce((a, b) => a + b, 0);
      return { idx, w: w.map((v) => v / sum) };
    });
  };
  const wx = weights(img.width, width);
  const wy = weights(img.height, height);
  const tmp = new Float32Array(width * img.height * 3);
  for (let y = 0; y < img.height; y++) {
    const row = y * img.width * ch;
    for (let x = 0; x < width; x++) {
      const { idx, w } = wx[x]!;
      let r = 0,
        g = 0,
        b = 0;
      for (let k = 0; k < idx.length; k++) {
        const p = row + idx[k]! * ch;
        r += img.data[p]! * w[k]!;
        g += img.data[p + 1]! * w[k]!;
        b += img.data[p + 2]! * w[k]!;
      }
      const o = (y * width + x) * 3;
      tmp[o] = r;
      tmp[o + 1] = g;
      tmp[o + 2] = b;
    }
  }
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const { idx, w } = wy[y]!;
    for (let x = 0; x < width; x++) {
      let r = 0,
        g = 0,
        b = 0;
      for (let k = 0; k < idx.length; k++) {
        const p = (idx[k]! * width + x) * 3;
        r += tmp[p]! * w[k]!;
        g += tmp[p + 1]! * w[k]!;
        b += tmp[p + 2]! * w[k]!;
      }
      const o = (y * width + x) * 3;
      out[o] = Math.round(r);
      out[o + 1] = Math.round(g);
      out[o + 2] = Math.round(b);
    }
  }
  return { data: out, width, height, channels: 3 };
}

export function flipPixels(img: Pixels, horizontal: boolean): Pixels {
  const { width, height, channels: ch } = img;
  const out = new Uint8Array(width * height * ch);
  for (let y = 0; y < height; y++) {
    const sy = horizontal ? y : height - 1 - y;
    for (let x = 0; x < width; x++) {
      const sx = horizontal ? width - 1 - x : x;
      const s = (sy * width + sx) * ch;
      const d = (y * width + x) * ch;
      for (let c = 0; c < ch; c++) out[d + c] = img.data[s + c]!;
    }
  }
  return { data: out, width, height, channels: ch };
}

/**
 * Test-time augmentation merge: the union of all passes, de-duplicated by NMS; each kept
 * cell's score is the mean over the passes of its best match (0 where a pass missed it)
 * and its box the score-weighted mean of the matches, so a cell seen in one pass only is
 * damped and agreement is rewarded.
 */
export function mergePasses(passes: Candidate[][], nmsIou: number, matchIou = 0.55, floor = 0): Candidate[] {
  const kept = classwiseNms(passes.flat(), nmsIou);
  const out: Candidate[] = [];
  for (const k of kept) {
    let total = 0;
    const acc: Box = [0, 0, 0, 0];
    for (const pass of passes) {
      let best: Candidate | null = null;
      let bestIou = matchIou;
      for (const c of pass) {
        if (c.label !== k.label) continue;
        const v = iou(c.box, k.box);
        if (v >= bestIou) {
          bestIou = v;
          best = c;
        }
      }
      if (!best) continue;
      total += best.score;
      const { box: b, score: s } = best;
      acc[0] += b[0] * s;
      acc[1] += b[1] * s;
      acc[2] += b[2] * s;
      acc[3] += b[3] * s;
    }
    const score = total / passes.length;
    if (score > floor && total > 0) out.push({ label: k.label, score, box: acc.map((v) => v / total) as Box });
  }
  return classwiseNms(out, nmsIou);
}

/** Pixels -> candidates, with or without the flipped passes. */
async function detectImage(run: Runner, meta: ModelMetadata, img: Pixels, tta: boolean, floor: number): Promise<Candidate[]> {
  const plain = await detectPixels(run, meta, img, floor);
  if (!tta) return plain;
  const { width: w, height: h } = img;
  const hf = (await detectPixels(run, meta, flipPixels(img, true))).map((c) => ({ ...c, box: [w - c.box[2], c.box[1], w - c.box[0], c.box[3]] as Box }));
  const vf = (await detectPixels(run, meta, flipPixels(img, false))).map((c) => ({ ...c, box: [c.box[0], h - c.box[3], c.box[2], h - c.box[1]] as Box }));
  return mergePasses([plain, hf, vf], meta.postprocess.nms_iou, 0.55, meta.postprocess.score_floor);
}

/** One pass over the whole image at `factor` (whole or tiled), boxes in original pixels. */
async function passAt(
  run: Runner,
  meta: ModelMetadata,
  src: PixelSource,
  factor: number,
  tta: boolean,
  floor: number,
  tiling?: Tiling,
): Promise<{ candidates: Candidate[]; tiles: number }> {
  const sw = Math.max(1, Math.round(src.width * factor));
  const sh = Math.max(1, Math.round(src.height * factor));
  const fx = sw / src.width;
  const fy = sh / src.height;
  const back = (c: Candidate): Candidate => ({ ...c, box: [c.box[0] / fx, c.box[1] / fy, c.box[2] / fx, c.box[3] / fy] });
  // a region of the scaled image, read from the original and resampled
  const readScaled = async (l: number, t: number, w: number, h: number): Promise<Pixels> => {
    if (factor === 1) return src.read(l, t, w, h);
    const ol = Math.floor(l / fx);
    const ot = Math.floor(t / fy);
    const ow = Math.min(src.width - ol, Math.ceil((l + w) / fx) - ol);
    const oh = Math.min(src.height - ot, Math.ceil((t + h) / fy) - ot);
    const scaled = resizePixels(await src.read(ol, ot, ow, oh), Math.max(1, Math.round(ow * fx)), Math.max(1, Math.round(oh * fy)));
    // align the resampled block to the requested region (sub-pixel offsets are negligible)
    const dx = Math.min(Math.max(0, Math.round(l - ol * fx)), scaled.width - 1);
    const dy = Math.min(Math.max(0, Math.round(t - ot * fy)), scaled.height - 1);
    const cw = Math.min(w, scaled.width - dx);
    const chh = Math.min(h, scaled.height - dy);
    const out = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      const yy = Math.min(y, chh - 1);
      for (let x = 0; x < w; x++) {
        const xx = Math.min(x, cw - 1);
        const s = ((dy + yy) * scaled.width + dx + xx) * 3;
        const d = (y * w + x) * 3;
        out[d] = scaled.data[s]!;
        out[d + 1] = scaled.data[s + 1]!;
        out[d + 2] = scaled.data[s + 2]!;
      }
    }
    return { data: out, width: w, height: h, channels: 3 };
  };
  if (sw * sh <= WHOLE_IMAGE_PIXELS) {
    const img = await readScaled(0, 0, sw, sh);
    return { candidates: (await detectImage(run, meta, img, tta, floor)).map(back), tiles: 1 };
  }
  const t = await detectTiled(run, meta, sw, sh, readScaled, (img) => detectImage(run, meta, img, tta, floor), tiling);
  return { candidates: t.candidates.map(back), tiles: t.tiles };
}

/** Find all candidates above the model's floor, in original-image pixels. */
export async function detect(run: Runner, meta: ModelMetadata, source: PixelSource, opts: DetectOptions = {}): Promise<Detected> {
  checkDetectOptions(opts);
  const { width, height } = source;
  if (!(opts.whiteBalance ?? meta.input.white_balance === 'background')) return detectAs(run, meta, source, opts);
  // the background's colour from the image, or its central region when it is large (as --scale auto measures)
  const [pw, ph] = [Math.min(width, PROBE_PX), Math.min(height, PROBE_PX)];
  const gains = whiteBalanceGains(backgroundColour(await source.read(Math.floor((width - pw) / 2), Math.floor((height - ph) / 2), pw, ph)));
  // the input tensor applies them (core/pipeline.ts toTensor): no second copy of the pixels
  return { ...(await detectAs(run, { ...meta, input: { ...meta.input, gains } }, source, opts)), whiteBalance: gains };
}

async function detectAs(run: Runner, meta: ModelMetadata, src: PixelSource, opts: DetectOptions): Promise<Detected> {
  const scale = opts.scale ?? 'auto';
  const tta = opts.tta ?? false;
  const { width, height } = src;
  const base = meta.postprocess.score_floor;
  // a hair below: the decoder keeps scores above its floor, a count those at or above its edge
  const floor = tta || opts.floor === undefined ? base : Math.max(base, Math.min(opts.floor, scaleModel(meta).min_score) - 1e-6);
  if (scale !== 'auto') {
    return { width, height, ...(await passAt(run, meta, src, scale, tta, floor, opts.tiling)), scale };
  }
  const whole = width * height <= WHOLE_IMAGE_PIXELS;
  // A central region is enough to measure the cells: at most PROBE_PX square once scaled
  // (a refinement over a whole 2048 px image at 4x was a 67-megapixel pass); the whole image
  // when it fits, whose pass can then be the result.
  const regionAt = (f: number): PixelSource => {
    const side = Math.floor(PROBE_PX / f);
    if ((f === 1 && whole) || (width <= side && height <= side)) return src;
    const [pw, ph] = [Math.min(width, side), Math.min(height, side)];
    const [l0, t0] = [Math.floor((width - pw) / 2), Math.floor((height - ph) / 2)];
    return { width: pw, height: ph, read: (l, t, w, h) => src.read(l + l0, t + t0, w, h) };
  };
  const region1 = regionAt(1);
  const pass1 = await passAt(run, meta, region1, 1, false, floor);
  const first = estimateScale(meta, pass1.candidates, 1);
  let step = first.factor;
  // once off the native scale, refine until the measured cells are near the reference: the
  // first step assumes the model's typical response, later ones measure this image's own from
  // the last two passes (a secant step). With the typical response throughout, images at 1.5x
  // and 2x stopped at 1.1-1.2x and platelets were missed (bench/accuracy.ts).
  // A noisy measurement can send a step the wrong way: the pass whose cells measured nearest
  // the reference is the one kept.
  const miss = (e: number | null) => (e === null ? Number.POSITIVE_INFINITY : Math.abs(Math.log(e / scaleModel(meta).reference_px)));
  let best = { f: 1, last: pass1, region: region1, miss: miss(first.estimate.cellPx) };
  /** One measuring pass at factor `at`: the cells' measured size (null: too few cells). */
  const measure = async (at: number) => {
    const region = regionAt(at);
    const pass = await passAt(run, meta, region, at, false, floor);
    const e = estimateScale(meta, pass.candidates, at).estimate.cellPx;
    if (miss(e) < best.miss) best = { f: at, last: pass, region, miss: miss(e) };
    return e;
  };
  let [fPrev, ePrev] = [1, first.estimate.cellPx];
  // Too few cells to measure, yet something small and cell-like is there: cells far below the
  // training size look like that (a field at 0.2x, cells of 19 px, counted 1 red cell of 25 at
  // 1x: weak boxes of 20-60 px); one look at the largest factor decides. A blank image pays
  // nothing: its weak guesses, if any (the fifth release sees 0.30-0.35 "red cells" in flat
  // grey), are boxes of a red cell's usual size, not small ones.
  const small = (b: Box) => Math.sqrt((b[2] - b[0]) * (b[3] - b[1])) < scaleModel(meta).min_px;
  if (first.estimate.basis === 'none' && pass1.candidates.filter((c) => c.score >= 0.3 && small(c.box)).length >= 3) {
    const e = await measure(4);
    if (e !== null) [fPrev, ePrev, step] = [4, e, toReference(meta, e)];
  }
  for (let i = 0; i < 4 && Math.abs(Math.log(step)) > Math.log(1.08); i++) {
    const next = Math.round(Math.min(4, Math.max(0.25, fPrev * step)) * 1000) / 1000;
    if (next === fPrev) break; // held at the factor's limit: the same pass again would change nothing
    const e = await measure(next);
    if (e === null) break;
    const response = ePrev !== null && Math.abs(Math.log(next / fPrev)) > 0.02 ? Math.log(e / ePrev) / Math.log(next / fPrev) : Number.NaN;
    step = toReference(meta, e, Number.isFinite(response) ? Math.min(1.25, Math.max(0.4, response)) : undefined);
    [fPrev, ePrev] = [next, e];
  }
  const { f, last, region } = best;
  if (region === src && !tta) return { width, height, ...last, scale: f, estimate: first.estimate };
  return { width, height, ...(await passAt(run, meta, src, f, tta, floor, opts.tiling)), scale: f, estimate: first.estimate };
}

/** A bad argument as an error message shows it: a string in quotes, so that '0.4' does not read as a number out of range. */
export const shown = (v: unknown): string => (typeof v === 'string' ? `'${v}' (a string)` : String(v));

/** The options' one rule, whoever passes them (library, CLI, server, browser): before any decoding. */
export function checkDetectOptions(opts: DetectOptions): void {
  if (opts.scale !== undefined) checkScale(opts.scale);
  if (opts.tta !== undefined && typeof opts.tta !== 'boolean') throw new TypeError(`tta must be true or false, not ${shown(opts.tta)}`);
  if (opts.floor !== undefined && !(typeof opts.floor === 'number' && opts.floor >= 0 && opts.floor <= 1))
    throw new RangeError(`floor must be a number from 0 to 1, not ${shown(opts.floor)}`);
  if (opts.whiteBalance !== undefined && typeof opts.whiteBalance !== 'boolean')
    throw new TypeError(`whiteBalance must be true or false, not ${shown(opts.whiteBalance)}`);
}

/** 'auto' | '1' | '1.6' (CLI flag, form field): 'auto' estimates the magnification, a number forces it. */
export function parseScale(v: string): 'auto' | number {
  if (v === 'auto') return 'auto';
  if (!/^\d*\.?\d+$/.test(v)) throw new RangeError(`scale must be 'auto' or a number from 0.25 to 4 (1 = off), not '${v}'`);
  return checkScale(Number(v));
}

/** The one rule for a scale, whoever gives it (library, CLI flag, form field). */
export function checkScale<T extends 'auto' | number>(scale: T): T {
  if (scale !== 'auto' && !(typeof scale === 'number' && scale >= 0.25 && scale <= 4)) {
    throw new RangeError(`scale must be 'auto' or a number from 0.25 to 4 (1 = off), not ${String(scale)}`);
  }
  return scale;
}

/** Side of the central region that --scale auto measures, in the pixels of the pass (the scaled image). */
const PROBE_PX = 1536;
