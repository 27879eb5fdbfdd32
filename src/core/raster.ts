/**
 * The annotated picture's overlay drawn straight into RGB pixels (no I/O, no SVG): box
 * frames (dashed for cells to review), label backgrounds and label text from a glyph atlas,
 * and the layout of labels and legend, which the adapters render and the tests check.
 */
import type { Pixels } from './pipeline.js';
import { type Box, CLASSES, type CellClass, type Detection, type PerClass } from './types.js';
import { SHORT } from './vocabulary.js';

/** Black or white text, whichever reads better on a #rrggbb background. */
export function textOn(hex: string): string {
  const v = parseInt(hex.slice(1), 16);
  const lum = 0.299 * (v >> 16) + 0.587 * ((v >> 8) & 255) + 0.114 * (v & 255);
  return lum > 140 ? '#000' : '#fff';
}

/** #rgb or #rrggbb as 0xrrggbb. */
export function parseColour(hex: string): number {
  const h = hex.startsWith('#') ? hex.slice(1) : hex;
  const full = h.length === 3 ? [...h].map((c) => c + c).join('') : h;
  const v = parseInt(full, 16);
  if (full.length !== 6 || !Number.isFinite(v)) throw new Error(`not a colour: ${hex}`);
  return v;
}

/** Opacity of the label backgrounds, in 256ths (0.75). */
const LABEL_ALPHA = 192;

export interface LabelLayout {
  text: string;
  /** Background rectangle (picture pixels, fractional as laid out). */
  x: number;
  y: number;
  width: number;
  height: number;
  /** Where the text's baseline starts. */
  textX: number;
  baseline: number;
  textColour: string;
}

export interface BoxLayout {
  box: Box;
  colour: string;
  dashed: boolean;
  label: LabelLayout | null;
}

export interface AnnotationLayout {
  /** Label font size (px), from the median cell side. */
  fontSize: number;
  /** Stroke width as laid out (px) and the integer line thickness drawn. */
  stroke: number;
  thickness: number;
  /** Dash pattern of uncertain boxes (px on, px off). */
  dash: [on: number, off: number];
  /** In drawing order: low scores first, so that confident boxes and their labels stay on top. */
  boxes: BoxLayout[];
}

export interface LayoutOptions {
  /** Colour (#rrggbb) of each class. */
  colours: Readonly<Record<string, string>>;
  /** Label each box (default true). */
  labels?: boolean;
  /** Put the probability in the label (default true). */
  scores?: boolean;
}

/**
 * A probability as a box label shows it: two decimals cut, not rounded, so that a label never
 * crosses a two-decimal threshold (0.5692 under a threshold of 0.57 reads 0.56?, not 0.57?).
 */
export function scoreLabel(score: number): string {
  // k / 100 <= score < (k + 1) / 100 exactly, as thresholds like 0.57 are the same doubles
  let k = Math.floor(score * 100);
  if ((k + 1) / 100 <= score) k++;
  else if (k / 100 > score) k--;
  return (k / 100).toFixed(2);
}

/**
 * Boxes and labels of the annotated picture. Labels are sized by the cells (a big mosaic of
 * smears has cells of the usual size), not by the picture; each label sits above its box when
 * there is room, else inside it, and is kept inside the picture.
 */
export function annotationLayout(width: number, _height: number, dets: readonly Detection[], o: LayoutOptions): AnnotationLayout {
  const sides = dets.map((d) => Math.sqrt(Math.max(1, (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))).sort((a, b) => a - b);
  const cell = sides[Math.floor(sides.length / 2)] ?? 96;
  const fs = Math.round(Math.min(28, Math.max(9, cell / 8.5)));
  const sw = Math.min(4, Math.max(1.5, cell / 60));
  const boxes: BoxLayout[] = [];
  for (const d of [...dets].sort((a, b) => a.score - b.score)) {
    const [x1, y1] = d.box;
    const c = o.colours[d.label];
    if (c === undefined) throw new Error(`the model's metadata gives no colour for class ${d.label}`);
    let label: LabelLayout | null = null;
    if (o.labels !== false) {
      const text = `${SHORT[d.label]}${o.scores !== false ? ` ${scoreLabel(d.score)}` : ''}${d.uncertain ? '?' : ''}`;
      const tw = text.length * fs * 0.6 + 4;
      const ty = y1 >= fs + 2 ? y1 - fs - 2 : y1;
      const tx = Math.max(0, Math.min(x1, width - tw));
      label = { text, x: tx, y: ty, width: tw, height: fs + 2, textX: tx + 2, baseline: ty + fs - 1, textColour: textOn(c) };
    }
    boxes.push({ box: d.box, colour: c, dashed: d.uncertain, label });
  }
  return { fontSize: fs, stroke: sw, thickness: Math.max(1, Math.round(sw)), dash: [4 * sw, 3 * sw], boxes };
}

export interface LegendEntry {
  label: CellClass;
  colour: string;
  text: string;
  /** Top left of the colour square, in picture pixels (y below the picture). */
  x: number;
  y: number;
  row: number;
}

export interface LegendLayout {
  /** Height of the white strip added below the picture. */
  height: number;
  fontSize: number;
  rows: number;
  entries: LegendEntry[];
}

/**
 * The legend (counts per class, in the box colours) in a strip below the picture, so that it
 * hides no cell, sized by the picture (it is read with the whole picture in view); entries
 * wrap onto more rows on a narrow picture. The text starts at x + fontSize + 6, its baseline
 * at y + fontSize - 2.
 */
export function legendLayout(
  width: number,
  height: number,
  counts: PerClass<number>,
  uncertain: PerClass<number>,
  colours: Readonly<Record<string, string>>,
): LegendLayout {
  const s = Math.max(1, Math.min(width, height) / 480);
  const fs = Math.round(13 * s);
  const pad = Math.round(6 * s);
  const entries: LegendEntry[] = [];
  let x = pad;
  let row = 0;
  for (const k of CLASSES) {
    const colour = colours[k];
    if (colour === undefined) throw new Error(`the model's metadata gives no colour for class ${k}`);
    const text = `${k}: ${counts[k]}${uncertain[k] ? ` (+${uncertain[k]} to review)` : ''}`;
    const w = fs + 6 + text.length * fs * 0.62 + 3 * pad;
    if (x > pad && x + w > width) {
      x = pad;
      row++;
    }
    entries.push({ label: k, colour, text, x, y: height + pad + row * (fs + pad), row });
    x += w;
  }
  return { height: (row + 1) * (fs + pad) + pad, fontSize: fs, rows: row + 1, entries };
}

/**
 * Coverage masks of the printable ASCII characters (32-126) of one monospace font size: glyph
 * `c` is the cellWidth x cellHeight bytes at (c - 32) * cellWidth * cellHeight in `mask`, its
 * pen at (originX, baseline) of the cell; the pen advances 0.6 font sizes per character.
 */
export interface GlyphAtlas {
  fontSize: number;
  cellWidth: number;
  cellHeight: number;
  originX: number;
  baseline: number;
  mask: Uint8Array;
}

export const ATLAS_FIRST = 32;
export const ATLAS_COUNT = 95;

/** The cell geometry of an atlas for a font size, room for DejaVu Sans Mono's ascenders, descenders and overhangs. */
export function atlasCell(fontSize: number): Pick<GlyphAtlas, 'cellWidth' | 'cellHeight' | 'originX' | 'baseline'> {
  const pad = Math.ceil(fontSize * 0.25);
  const baseline = pad + Math.ceil(fontSize * 0.95);
  return { cellWidth: Math.ceil(fontSize * 0.6) + 2 * pad, cellHeight: baseline + Math.ceil(fontSize * 0.3) + pad, originX: pad, baseline };
}

function checkRgb(img: Pixels): void {
  if (img.channels !== 3) throw new Error(`drawing needs RGB pixels, not ${img.channels} channels`);
  if (img.data.length < img.width * img.height * 3)
    throw new Error(`${img.width} x ${img.height} pixels need ${img.width * img.height * 3} bytes, not ${img.data.length}`);
}

/** Fill [x0, x1) x [y0, y1) (clipped to the picture) with an opaque colour 0xrrggbb. */
export function fillRect(img: Pixels, x0: number, y0: number, x1: number, y1: number, rgb: number): void {
  blendRect(img, x0, y0, x1, y1, rgb, 256); // alpha 256: exactly the colour
}

/** Blend a colour 0xrrggbb over [x0, x1) x [y0, y1) (clipped), alpha in 256ths. */
export function blendRect(img: Pixels, x0: number, y0: number, x1: number, y1: number, rgb: number, alpha256: number): void {
  const l = Math.max(0, x0);
  const r = Math.min(img.width, x1);
  const t = Math.max(0, y0);
  const b = Math.min(img.height, y1);
  if (l >= r || t >= b) return;
  const d = img.data;
  const a = Math.max(0, Math.min(256, alpha256 | 0));
  const na = 256 - a;
  // colour * alpha and the rounding, once per channel
  const cr = ((rgb >> 16) & 255) * a + 128;
  const cg = ((rgb >> 8) & 255) * a + 128;
  const cb = (rgb & 255) * a + 128;
  for (let y = t; y < b; y++) {
    const end = (y * img.width + r) * 3;
    for (let i = (y * img.width + l) * 3; i < end; i += 3) {
      d[i] = (d[i]! * na + cr) >> 8;
      d[i + 1] = (d[i + 1]! * na + cg) >> 8;
      d[i + 2] = (d[i + 2]! * na + cb) >> 8;
    }
  }
}

/**
 * The dashes of a line `length` pixels long whose first pixel is at `start` along the path:
 * fills each dash through `span(from, to)` (pixel offsets along the line, to exclusive).
 */
function dashes(length: number, start: number, on: number, period: number, span: (from: number, to: number) => void): void {
  if (period <= 0 || on >= period) {
    span(0, length);
    return;
  }
  let i = 0;
  while (i < length) {
    const p = (start + i) % period;
    if (p < on) {
      const n = Math.min(on - p, length - i);
      span(i, i + n);
      i += n;
    } else i += period - p;
  }
}

/**
 * A rectangle's frame, `thickness` pixels centred on the edges of [x1, x2] x [y1, y2]
 * (fractional), clipped to the picture. With `dash` (px on, px off, as an SVG
 * stroke-dasharray) the dashes run clockwise from the top left corner, continuous round the
 * corners.
 */
export function drawFrame(img: Pixels, x1: number, y1: number, x2: number, y2: number, thickness: number, rgb: number, dash?: readonly [number, number]): void {
  const t = Math.max(1, Math.round(thickness));
  const h = t / 2;
  const a = Math.round(x1 - h);
  const c = Math.round(y1 - h);
  const b = Math.max(a, Math.round(x2 - h));
  const d = Math.max(c, Math.round(y2 - h));
  const on = dash ? Math.max(1, Math.round(dash[0])) : 0;
  const period = dash ? on + Math.max(0, Math.round(dash[1])) : 0;
  const w = b - a;
  const ht = d - c;
  // top, left to right; right, top to bottom; bottom, right to left; left, bottom to top
  dashes(w + t, 0, on, period, (f, e) => fillRect(img, a + f, c, a + e, c + t, rgb));
  dashes(ht + t, w, on, period, (f, e) => fillRect(img, b, c + f, b + t, c + e, rgb));
  dashes(w + t, w + ht, on, period, (f, e) => fillRect(img, b + t - e, d, b + t - f, d + t, rgb));
  dashes(ht + t, 2 * w + ht, on, period, (f, e) => fillRect(img, a, d + t - e, a + t, d + t - f, rgb));
}

/**
 * A line of text from a glyph atlas, pen starting at (x, baseline), blended in colour
 * 0xrrggbb by each glyph's coverage, clipped to the picture. Characters outside the atlas
 * advance the pen and draw nothing.
 */
export function drawText(img: Pixels, atlas: GlyphAtlas, text: string, x: number, baseline: number, rgb: number): void {
  const { cellWidth: cw, cellHeight: ch, mask } = atlas;
  const advance = atlas.fontSize * 0.6;
  const top = Math.round(baseline) - atlas.baseline;
  const y0 = Math.max(0, top);
  const y1 = Math.min(img.height, top + ch);
  if (y0 >= y1) return;
  const d = img.data;
  const W = img.width;
  const cr = (rgb >> 16) & 255;
  const cg = (rgb >> 8) & 255;
  const cb = rgb & 255;
  for (let k = 0; k < text.length; k++) {
    const g = text.charCodeAt(k) - ATLAS_FIRST;
    if (g <= 0 || g >= ATLAS_COUNT) continue; // space and what the atlas lacks
    const left = Math.round(x + k * advance) - atlas.originX;
    const x0 = Math.max(0, left);
    const x1 = Math.min(W, left + cw);
    if (x0 >= x1) continue;
    const base = g * cw * ch;
    for (let y = y0; y < y1; y++) {
      let m = base + (y - top) * cw + (x0 - left);
      const end = (y * W + x1) * 3;
      for (let i = (y * W + x0) * 3; i < end; i += 3, m++) {
        const a = mask[m]!;
        if (a === 0) continue;
        const na = 255 - a;
        // round(v / 255) for v in 0..65025 without a division
        let v = d[i]! * na + cr * a + 128;
        d[i] = (v + (v >> 8)) >> 8;
        v = d[i + 1]! * na + cg * a + 128;
        d[i + 1] = (v + (v >> 8)) >> 8;
        v = d[i + 2]! * na + cb * a + 128;
        d[i + 2] = (v + (v >> 8)) >> 8;
      }
    }
  }
}

/**
 * Draw a layout's boxes and labels into RGB pixels (in place), in the layout's order. The
 * atlas must be that of the layout's font size; it is needed only when there are labels.
 */
export function drawAnnotations(img: Pixels, layout: AnnotationLayout, atlas: GlyphAtlas | null): void {
  checkRgb(img);
  for (const { box, colour, dashed, label } of layout.boxes) {
    const rgb = parseColour(colour);
    drawFrame(img, box[0], box[1], box[2], box[3], layout.thickness, rgb, dashed ? layout.dash : undefined);
    if (!label) continue;
    if (!atlas || atlas.fontSize !== layout.fontSize) throw new Error(`labels of ${layout.fontSize} px need a glyph atlas of that size`);
    const x0 = Math.round(label.x);
    const y0 = Math.round(label.y);
    blendRect(img, x0, y0, Math.round(label.x + label.width), y0 + Math.round(label.height), rgb, LABEL_ALPHA);
    drawText(img, atlas, label.text, label.textX, label.baseline, parseColour(label.textColour));
  }
}
