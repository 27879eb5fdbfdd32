/**
 * From pixels to candidates, independent of where pixels and the network live: Node
 * (sharp + onnxruntime-node) and the browser (canvas + onnxruntime-web) both call this.
 */
import { decodeDetections, paddedSize } from './decode.js';
import { mergeTiles, ownedByTile, planTiles } from './tiling.js';
import type { Candidate, ModelMetadata } from './types.js';

export const WHOLE_IMAGE_PIXELS = 2048 * 2048;

/** Pixels as megapixels in a message: whole ones for photographs, two significant digits below ten. */
export const megapixels = (px: number): string => (px >= 1e7 ? (px / 1e6).toFixed(0) : String(Number((px / 1e6).toPrecision(2))));
/**
 * Large tiles: the overlap is paid per seam, so 1536 px tiles push 1.4x a 12000 x 9000 smear's
 * pixels through the network where 1024 px tiles pushed 2.4x. Larger tiles cost memory more
 * than they save time: on a 12000 x 9000 smear with the int8 model (bench/large.js --one, AVX-512
 * host) 1792 px tiles took the same 6.0 s and peaked at 590-620 MB against 510 MB (its float
 * first convolution's activations grow with the tile).
 */
export const TILE_SIZE = 1536;
/**
 * At least the largest white cell (~230 px at the training scale, to which `--scale auto`
 * brings every image): a cell whose centre is in a tile's core is then whole in that tile.
 */
export const TILE_OVERLAP = 256;

export interface Tiling {
  size: number;
  overlap: number;
}

export interface Pixels {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA, alpha ignored). */
  channels: number;
}

/**
 * The network's input: float NCHW, normalised (fp32 models), or the 8-bit RGB pixels as they
 * are, NHWC (the int8 model, which has the normalisation folded into its first convolution,
 * so that the image itself is its first 8-bit tensor).
 */
export interface InputTensor {
  data: Float32Array<ArrayBuffer> | Uint8Array<ArrayBuffer>;
  dims: [number, number, number, number];
  /** The padded size, whatever the layout. */
  height: number;
  width: number;
}

export type Runner = (x: InputTensor) => Promise<{ scores: Float32Array; deltas: Float32Array }>;

/** A pixel is dark when all three channels are below this: unlit, not stained. */
export const DARK_LEVEL = 40;

const isUint8 = (meta: ModelMetadata) => meta.input.dtype === 'uint8';

/** The shape of a padded input as the model's layout wants it. */
export const inputDims = (meta: ModelMetadata, paddedH: number, paddedW: number): InputTensor['dims'] =>
  meta.input.layout === 'NHWC' ? [1, paddedH, paddedW, 3] : [1, 3, paddedH, paddedW];

/** An 8-bit model's padding: the mean colour, which the folded normalisation maps to 0. */
const padColour = (meta: ModelMetadata) => meta.input.mean.map((m) => Math.round(m / meta.input.scale));

/**
 * Pixels -> the padded input tensor the model metadata asks for, written into `out` (of
 * 3 x paddedH x paddedW elements of the model's type; every element is written, padding
 * included). Dark pixels become padding: the network never saw unlit pixels and called black
 * margins (slide scanners, stitched or vignetted fields, failed captures) white cells at up
 * to 0.94, and hid the red cells beside them; as padding they are what lies beyond an
 * image's edge. No stained cell is dark: of the 23,848 expert boxes of the shared datasets
 * none has more than 3 % dark pixels.
 */
export function toTensor(img: Pixels, meta: ModelMetadata, paddedH: number, paddedW: number, out?: InputTensor['data']): InputTensor {
  const n = 3 * paddedH * paddedW;
  const dims = inputDims(meta, paddedH, paddedW);
  const luts = meta.input.gains && gainTables(meta.input.gains);
  if (isUint8(meta)) {
    const buf = out instanceof Uint8Array && out.length === n ? out : new Uint8Array(n);
    if (meta.input.layout !== 'NHWC') throw new Error(`${meta.name}: an 8-bit input must be NHWC, not ${meta.input.layout}`);
    return { data: fillUint8(img, padColour(meta), paddedH, paddedW, buf, luts), dims, height: paddedH, width: paddedW };
  }
  const buf = out instanceof Float32Array && out.length === n ? out : new Float32Array(n);
  return { data: fillFloat(img, meta, paddedH, paddedW, buf, luts), dims, height: paddedH, width: paddedW };
}

type Tables = [Uint8Array, Uint8Array, Uint8Array];

/** What each 8-bit value becomes under a channel's gain: rounded half up, capped at 255 (as training does). */
const gainTables = (gains: [number, number, number]): Tables =>
  gains.map((g) => Uint8Array.from({ length: 256 }, (_, v) => Math.min(255, Math.floor(v * g + 0.5)))) as Tables;

const IDENTITY = Uint8Array.from({ length: 256 }, (_, v) => v);

function fillFloat(img: Pixels, meta: ModelMetadata, paddedH: number, paddedW: number, out: Float32Array<ArrayBuffer>, luts?: Tables) {
  const { scale, mean, std, pad_value: pad } = meta.input;
  const plane = paddedH * paddedW;
  const [m0, m1, m2] = mean;
  const [s0, s1, s2] = std;
  const [a0, a1, a2] = [scale / s0, scale / s1, scale / s2];
  const [b0, b1, b2] = [-m0 / s0, -m1 / s1, -m2 / s2];
  const { data, width, height, channels: ch } = img;
  for (let y = 0; y < height; y++) {
    let src = y * width * ch;
    const row = y * paddedW;
    let darkRed = false; // a cheap flag in the hot loop; the rare dark rows are mended after it
    if (luts) {
      const [l0, l1, l2] = luts;
      for (let x = 0; x < width; x++, src += ch) {
        const r = l0[data[src]!]!;
        if (r < DARK_LEVEL) darkRed = true;
        out[row + x] = r * a0 + b0;
        out[plane + row + x] = l1[data[src + 1]!]! * a1 + b1;
        out[2 * plane + row + x] = l2[data[src + 2]!]! * a2 + b2;
      }
    } else {
      for (let x = 0; x < width; x++, src += ch) {
        const r = data[src]!;
        if (r < DARK_LEVEL) darkRed = true;
        out[row + x] = r * a0 + b0;
        out[plane + row + x] = data[src + 1]! * a1 + b1;
        out[2 * plane + row + x] = data[src + 2]! * a2 + b2;
      }
    }
    if (darkRed) {
      // dark as the network sees it, after any gains (training masks the balanced image)
      const [l0, l1, l2] = luts ?? [IDENTITY, IDENTITY, IDENTITY];
      src = y * width * ch;
      for (let x = 0; x < width; x++, src += ch) {
        if (l0[data[src]!]! < DARK_LEVEL && l1[data[src + 1]!]! < DARK_LEVEL && l2[data[src + 2]!]! < DARK_LEVEL) {
          out[row + x] = pad;
          out[plane + row + x] = pad;
          out[2 * plane + row + x] = pad;
        }
      }
    }
    if (width < paddedW) for (let c = 0; c < 3; c++) out.fill(pad, c * plane + row + width, c * plane + row + paddedW);
  }
  for (let c = 0; c < 3; c++) out.fill(pad, c * plane + height * paddedW, (c + 1) * plane);
  return out;
}

/** RGB(A) rows copied as they are (NHWC; through the gain tables when given); dark pixels and the padding get the pad colour. */
function fillUint8(img: Pixels, [p0, p1, p2]: number[], paddedH: number, paddedW: number, out: Uint8Array<ArrayBuffer>, luts?: Tables) {
  const { data, width, height, channels: ch } = img;
  const rowLen = 3 * paddedW;
  const fillPad = (from: number, to: number) => {
    for (let d = from; d < to; d += 3) {
      out[d] = p0!;
      out[d + 1] = p1!;
      out[d + 2] = p2!;
    }
  };
  for (let y = 0; y < height; y++) {
    const row = y * rowLen;
    let src = y * width * ch;
    let darkRed = false;
    if (ch === 3 && !luts) {
      out.set(data.subarray(src, src + 3 * width), row);
      for (let x = 0; x < width; x++, src += 3) if (data[src]! < DARK_LEVEL) darkRed = true;
    } else {
      const [l0, l1, l2] = luts ?? [IDENTITY, IDENTITY, IDENTITY];
      for (let x = 0, d = row; x < width; x++, src += ch, d += 3) {
        const r = l0[data[src]!]!;
        if (r < DARK_LEVEL) darkRed = true;
        out[d] = r;
        out[d + 1] = l1[data[src + 1]!]!;
        out[d + 2] = l2[data[src + 2]!]!;
      }
    }
    // dark as the network sees it, after any gains (training masks the balanced image)
    if (darkRed)
      for (let d = row; d < row + 3 * width; d += 3) if (out[d]! < DARK_LEVEL && out[d + 1]! < DARK_LEVEL && out[d + 2]! < DARK_LEVEL) fillPad(d, d + 3);
    fillPad(row + 3 * width, row + rowLen);
  }
  fillPad(height * rowLen, paddedH * rowLen);
  return out;
}

/**
 * The input tensor of the last pass, lent to the next pass of the same size and type:
 * allocating a fresh one (38 MB for a full float tile) cost as much as filling it (about
 * 30 ms a tile). One spare, taken while a pass runs, so passes that overlap never share one;
 * none above a tile's size.
 */
let spare: InputTensor['data'] | null = null;
const SPARE_MAX = 3 * TILE_SIZE * TILE_SIZE;

/** One network pass over a whole (small enough) image; candidates above `floor` (default: the model's). */
export async function detectPixels(run: Runner, meta: ModelMetadata, img: Pixels, floor = meta.postprocess.score_floor): Promise<Candidate[]> {
  const [ph, pw] = paddedSize(meta, img.height, img.width);
  const lent = spare;
  spare = null;
  const x = toTensor(img, meta, ph, pw, lent ?? undefined);
  if (x.data !== lent) spare = lent; // not of this size or type: keep it for another pass
  try {
    const { scores, deltas } = await run(x);
    return decodeDetections(meta, scores, deltas, img.height, img.width, floor);
  } finally {
    if (x.data.length <= SPARE_MAX) spare = x.data;
  }
}

export type RegionReader = (left: number, top: number, width: number, height: number) => Promise<Pixels>;

/**
 * Large images: overlapping native-resolution tiles, read one row of tiles at a time
 * (memory ~ width x TILE_SIZE), merged so that each cell is counted once.
 */
export async function detectTiled(
  run: Runner,
  meta: ModelMetadata,
  width: number,
  height: number,
  readStrip: RegionReader,
  detectTile: (img: Pixels) => Promise<Candidate[]> = (img) => detectPixels(run, meta, img),
  tiling: Tiling = { size: TILE_SIZE, overlap: TILE_OVERLAP },
): Promise<{ candidates: Candidate[]; tiles: number }> {
  const tiles = planTiles(width, height, tiling.size, tiling.overlap, meta.input.pad_multiple);
  const perTile: Candidate[][] = [];
  for (const y of [...new Set(tiles.map((t) => t.y))]) {
    const row = tiles.filter((t) => t.y === y);
    const strip = await readStrip(0, y, width, Math.max(...row.map((t) => t.height)));
    for (const t of row) perTile.push(ownedByTile(t, await detectTile(crop(strip, t.x, 0, t.width, t.height))));
  }
  return { candidates: mergeTiles(perTile, meta.postprocess.nms_iou), tiles: tiles.length };
}

export function crop(img: Pixels, left: number, top: number, width: number, height: number): Pixels {
  const ch = img.channels;
  const out = new Uint8Array(width * height * ch);
  for (let y = 0; y < height; y++) {
    const src = ((top + y) * img.width + left) * ch;
    out.set(img.data.subarray(src, src + width * ch), y * width * ch);
  }
  return { data: out, width, height, channels: ch };
}

/**
 * The colour of a smear's background (the plasma between cells, its brightest quarter): the
 * per-channel lower median of the brightest quarter of the lit pixels (not dark in all three
 * channels: an unlit margin would push cells into the quarter) among every STEP-th pixel in
 * each direction, by integer luminance. training/
 * hemocount_train/data.py computes the same, so a model trained on balanced images sees
 * balanced images here. Null for an image without pixels.
 */
export function backgroundColour(img: Pixels, step = 4): [number, number, number] | null {
  const { data, width, height, channels: ch } = img;
  // the sampled pixels' offsets and integer luminances, lit ones only (one pass computes them)
  const most = Math.ceil(height / step) * Math.ceil(width / step);
  const at = new Uint32Array(most);
  const lums = new Uint8Array(most);
  const hist = new Uint32Array(256);
  let n = 0;
  for (let y = step >> 1; y < height; y += step)
    for (let x = step >> 1, p = (y * width + x) * ch; x < width; x += step, p += step * ch) {
      if (data[p]! < DARK_LEVEL && data[p + 1]! < DARK_LEVEL && data[p + 2]! < DARK_LEVEL) continue;
      const l = Math.floor((299 * data[p]! + 587 * data[p + 1]! + 114 * data[p + 2]! + 500) / 1000);
      at[n] = p;
      lums[n++] = l;
      hist[l]!++;
    }
  if (!n) return null;
  // T: the luminance at rank floor(0.75 n) of the sorted values; the pixels at or above it
  let t = 0;
  for (let below = 0; below + hist[t]! <= Math.floor(0.75 * n); t++) below += hist[t]!;
  const channels = [new Uint32Array(256), new Uint32Array(256), new Uint32Array(256)];
  let m = 0;
  for (let i = 0; i < n; i++) {
    if (lums[i]! < t) continue;
    const p = at[i]!;
    channels[0]![data[p]!]!++;
    channels[1]![data[p + 1]!]!++;
    channels[2]![data[p + 2]!]!++;
    m++;
  }
  const lowerMedian = (h: Uint32Array) => {
    let seen = 0;
    for (let v = 0; v < 256; v++) {
      seen += h[v]!;
      if (seen > (m - 1) >> 1) return v;
    }
    return 255;
  };
  return [lowerMedian(channels[0]!), lowerMedian(channels[1]!), lowerMedian(channels[2]!)];
}

/** Per-channel gains that make a background grey at its own mean brightness (each within 0.6-1.6). */
export function whiteBalanceGains(bg: [number, number, number] | null): [number, number, number] {
  if (!bg) return [1, 1, 1];
  const mean = (bg[0] + bg[1] + bg[2]) / 3;
  return bg.map((v) => Math.min(1.6, Math.max(0.6, mean / Math.max(1, v)))) as [number, number, number];
}

/** RGB(A) -> RGB with each channel scaled by its gain (rounded half up, capped at 255). */
export function applyGains(img: Pixels, gains: [number, number, number]): Pixels {
  const [l0, l1, l2] = gainTables(gains);
  const { data, width, height, channels: ch } = img;
  const out = new Uint8Array(width * height * 3);
  for (let s = 0, d = 0; d < out.length; s += ch, d += 3) {
    out[d] = l0[data[s]!]!;
    out[d + 1] = l1[data[s + 1]!]!;
    out[d + 2] = l2[data[s + 2]!]!;
  }
  return { data: out, width, height, channels: 3 };
}
