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

export type Runner = (input: Float32Array, height: number, width: number) => Promise<{ scores: Float32Array; deltas: Float32Array }>;

/** A pixel is dark when all three channels are below this: unlit, not stained. */
export const DARK_LEVEL = 40;

/**
 * Pixels -> normalised, padded NCHW float tensor as the model metadata says, written into
 * `out` (of 3 x paddedH x paddedW floats; every element is written, padding included).
 * Dark pixels become padding: the network never saw unlit pixels and called black margins
 * (slide scanners, stitched or vignetted fields, failed captures) white cells at up to 0.94,
 * and hid the red cells beside them; as padding they are what lies beyond an image's edge.
 * No stained cell is dark: of the 23,848 expert boxes of the shared datasets none has more
 * than 3 % dark pixels.
 */
export function toTensor(
  img: Pixels,
  meta: ModelMetadata,
  paddedH: number,
  paddedW: number,
  out = new Float32Array(3 * paddedH * paddedW),
): Float32Array<ArrayBuffer> {
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
    for (let x = 0; x < width; x++, src += ch) {
      const r = data[src]!;
      if (r < DARK_LEVEL) darkRed = true;
      out[row + x] = r * a0 + b0;
      out[plane + row + x] = data[src + 1]! * a1 + b1;
      out[2 * plane + row + x] = data[src + 2]! * a2 + b2;
    }
    if (darkRed) {
      src = y * width * ch;
      for (let x = 0; x < width; x++, src += ch) {
        if (data[src]! < DARK_LEVEL && data[src + 1]! < DARK_LEVEL && data[src + 2]! < DARK_LEVEL) {
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

/**
 * The input tensor of the last pass, lent to the next pass of the same size: allocating a
 * fresh one (38 MB for a full tile) cost as much as filling it (about 30 ms a tile). One spare,
 * taken while a pass runs, so passes that overlap never share one; none above a tile's size.
 */
let spare: Float32Array<ArrayBuffer> | null = null;
const SPARE_MAX = 3 * TILE_SIZE * TILE_SIZE;

/** One network pass over a whole (small enough) image; candidates above `floor` (default: the model's). */
export async function detectPixels(run: Runner, meta: ModelMetadata, img: Pixels, floor = meta.postprocess.score_floor): Promise<Candidate[]> {
  const [ph, pw] = paddedSize(meta, img.height, img.width);
  const n = 3 * ph * pw;
  const buf = spare?.length === n ? spare : new Float32Array(n);
  if (buf === spare) spare = null;
  try {
    const { scores, deltas } = await run(toTensor(img, meta, ph, pw, buf), ph, pw);
    return decodeDetections(meta, scores, deltas, img.height, img.width, floor);
  } finally {
    if (n <= SPARE_MAX) spare = buf;
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
