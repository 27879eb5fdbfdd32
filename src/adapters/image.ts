/**
 * Images through sharp: decoding (EXIF orientation, grey / 16-bit / alpha -> 8-bit sRGB),
 * region reads for tiling, tensors for the network, and the annotated picture.
 */
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import sharp from 'sharp';
import { crop } from '../core/pipeline.js';
import { SHORT } from '../core/vocabulary.js';
import { CLASSES, type Detection, type ModelMetadata, type PerClass } from '../core/types.js';

export type ImageInput = string | Uint8Array | RawImage;
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3;
}

/** Images above this many pixels are only ever read in strips, with sharp's limit raised. */
export const HUGE_PIXEL_LIMIT = 2 ** 31;

export const isRaw = (x: ImageInput): x is RawImage => typeof x === 'object' && 'data' in x && 'width' in x;

const nameOf = (input: ImageInput) => (typeof input === 'string' ? input : 'image');

function describe(e: unknown): string {
  const m = (e as Error).message ?? String(e);
  if (/unsupported image format/i.test(m)) return 'not an image in a format hemocount reads (JPEG, PNG, TIFF, WebP, GIF or AVIF)';
  if (/premature end|truncated|corrupt|unexpected end|Invalid|bad seek/i.test(m)) return `corrupt or truncated image (${m.trim().split('\n')[0] ?? m})`;
  if (/ENOENT|no such file/i.test(m)) return 'no such file';
  if (/pixel limit/i.test(m)) return m;
  return m.trim().split('\n')[0] ?? m;
}

/** The image format from its first bytes (names lie); null when it is no image hemocount reads. */
export function sniffImageType(b: Uint8Array): string | null {
  const at = (o: number, ...xs: number[]) => xs.every((x, i) => b[o + i] === x);
  if (at(0, 0xff, 0xd8, 0xff)) return 'jpeg';
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a)) return 'tiff';
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'webp';
  if (at(0, 0x47, 0x49, 0x46, 0x38)) return 'gif';
  if (at(4, 0x66, 0x74, 0x79, 0x70, 0x61, 0x76, 0x69, 0x66)) return 'avif';
  return null;
}

/** The formats hemocount reads (sharp also rasterises SVG and PDF: drawings are not smears). */
const FORMATS = new Set(['jpeg', 'png', 'tiff', 'webp', 'gif', 'heif']);

/** A path that is no regular readable file gets its real reason (a FIFO would block the decoder). */
async function checkFile(path: string): Promise<void> {
  let st: import('node:fs').Stats;
  try {
    st = await stat(path);
  } catch (e) {
    throw new Error(`${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  try {
    await access(path, constants.R_OK);
  } catch {
    throw new Error(`${path}: permission denied (cannot read the file)`);
  }
}

/** Width and height after EXIF orientation, from the header only. */
export async function probe(input: ImageInput): Promise<{ width: number; height: number; format: string }> {
  if (isRaw(input)) return { width: input.width, height: input.height, format: 'raw' };
  if (typeof input === 'string') await checkFile(input);
  try {
    const m = await sharp(input, { limitInputPixels: false }).metadata();
    if (!m.format || !FORMATS.has(m.format)) throw new Error('unsupported image format');
    if (!m.width || !m.height) throw new Error('image has no size');
    const swap = (m.orientation ?? 1) >= 5;
    return { width: swap ? m.height : m.width, height: swap ? m.width : m.height, format: m.format ?? 'unknown' };
  } catch (e) {
    throw new Error(`${nameOf(input)}: ${describe(e)}`);
  }
}

function pipeline(input: string | Uint8Array, huge: boolean) {
  // failOn 'warning': a truncated or spliced JPEG is an error, not a damaged picture counted as cells
  return sharp(input, { failOn: 'warning', limitInputPixels: huge ? HUGE_PIXEL_LIMIT : undefined })
    .rotate()
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb');
}

/** Decode to 8-bit RGB (whole image, sharp's default pixel limit). */
export async function decodeRgb(input: ImageInput): Promise<RawImage> {
  if (isRaw(input)) return input;
  try {
    const { data, info } = await pipeline(input, false).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw new Error(`${nameOf(input)}: ${describe(e)}`);
  }
}

/** One region of a (possibly huge) image; memory is that of the region, not the image. */
export async function readRegion(input: ImageInput, left: number, top: number, width: number, height: number): Promise<RawImage> {
  if (isRaw(input)) return crop(input, left, top, width, height) as RawImage;
  try {
    const { data, info } = await pipeline(input, true).extract({ left, top, width, height }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw new Error(`${nameOf(input)}: ${describe(e)}`);
  }
}

/** Black or white text, whichever reads better on a #rrggbb background. */
export function textOn(hex: string): string {
  const v = parseInt(hex.slice(1), 16);
  const lum = 0.299 * (v >> 16) + 0.587 * ((v >> 8) & 255) + 0.114 * (v & 255);
  return lum > 140 ? '#000' : '#fff';
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export interface DrawOptions {
  meta: ModelMetadata;
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  /** Label each box (default true). */
  labels?: boolean;
  /** Put the probability in the label (default true). */
  scores?: boolean;
}

/**
 * The legend (counts per class, in the box colours) in a white strip below the picture, so
 * that it hides no cell; entries wrap onto more rows on a narrow picture.
 */
function legendLayout(width: number, height: number, o: DrawOptions, colour: Record<string, string>): { height: number; svg: string } {
  const s = Math.max(1, Math.min(width, height) / 480);
  const fs = Math.round(13 * s);
  const pad = Math.round(6 * s);
  const items = CLASSES.map((k) => ({ k, text: `${k}: ${o.counts[k]}${o.uncertain[k] ? ` (+${o.uncertain[k]} to review)` : ''}` }));
  const parts: string[] = [];
  let x = pad;
  let row = 0;
  for (const { k, text } of items) {
    const w = fs + 6 + text.length * fs * 0.62 + 3 * pad;
    if (x > pad && x + w > width) {
      x = pad;
      row++;
    }
    const y = height + pad + row * (fs + pad);
    parts.push(
      `<rect x="${x}" y="${y}" width="${fs}" height="${fs}" fill="${colour[k]}"/>` +
        `<text x="${x + fs + 6}" y="${y + fs - 2}" font-family="DejaVu Sans, sans-serif" font-size="${fs}" fill="#000">${esc(text)}</text>`,
    );
    x += w;
  }
  return { height: (row + 1) * (fs + pad) + pad, svg: parts.join('') };
}

/** SVG overlay: boxes in the paper's colours, label + probability, dashed if uncertain, a legend. */
export function overlaySvg(width: number, height: number, dets: Detection[], o: DrawOptions): string {
  return overlay(width, height, dets, o).svg;
}

/** The overlay and the height of the legend's strip below the picture. */
function overlay(width: number, height: number, dets: Detection[], o: DrawOptions): { svg: string; strip: number } {
  const colour = Object.fromEntries(o.meta.classes.map((c) => [c.name, c.colour]));
  // box labels are sized by the cells (a big mosaic of smears has cells of the usual size),
  // the legend by the picture (it is read with the whole picture in view)
  const sides = dets.map((d) => Math.sqrt(Math.max(1, (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))).sort((a, b) => a - b);
  const cell = sides[Math.floor(sides.length / 2)] ?? 96;
  const fs = Math.round(Math.min(28, Math.max(9, cell / 8.5)));
  const sw = Math.min(4, Math.max(1.5, cell / 60));
  const parts: string[] = [];
  // draw low scores first so that confident boxes and their labels stay on top
  for (const d of [...dets].sort((a, b) => a.score - b.score)) {
    const [x1, y1, x2, y2] = d.box;
    const c = colour[d.label];
    if (c === undefined) throw new Error(`the model's metadata gives no colour for class ${d.label}`);
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${y1.toFixed(1)}" width="${(x2 - x1).toFixed(1)}" height="${(y2 - y1).toFixed(1)}" fill="none" stroke="${c}" stroke-width="${sw}"${d.uncertain ? ` stroke-dasharray="${(4 * sw).toFixed(1)},${(3 * sw).toFixed(1)}"` : ''}/>`,
    );
    if (o.labels !== false) {
      const text = `${SHORT[d.label]}${o.scores !== false ? ` ${d.score.toFixed(2)}` : ''}${d.uncertain ? '?' : ''}`;
      const tw = text.length * fs * 0.6 + 4;
      const ty = y1 >= fs + 2 ? y1 - fs - 2 : y1;
      const tx = Math.max(0, Math.min(x1, width - tw)); // keep labels inside the picture
      parts.push(
        `<rect x="${tx.toFixed(1)}" y="${ty.toFixed(1)}" width="${tw.toFixed(1)}" height="${fs + 2}" fill="${c}" fill-opacity="0.75"/>` +
          `<text x="${(tx + 2).toFixed(1)}" y="${(ty + fs - 1).toFixed(1)}" font-family="DejaVu Sans Mono, monospace" font-size="${fs}" fill="${textOn(c)}">${esc(text)}</text>`,
      );
    }
  }
  const legend = legendLayout(width, height, o, colour);
  parts.push(legend.svg);
  return { svg: `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + legend.height}">${parts.join('')}</svg>`, strip: legend.height };
}

/** The annotated picture as PNG or JPEG bytes. */
export async function drawAnnotated(input: ImageInput, dets: Detection[], o: DrawOptions & { format?: 'png' | 'jpeg' | 'webp' }): Promise<Buffer> {
  const { width, height } = await probe(input);
  const huge = width * height > 268e6;
  const base = isRaw(input) ? sharp(Buffer.from(input.data), { raw: { width, height, channels: 3 } }).removeAlpha() : pipeline(input, huge).removeAlpha();
  const { svg, strip } = overlay(width, height, dets, o);
  const img = base
    .extend({ bottom: Math.round(strip), background: '#ffffff' })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0, limitInputPixels: false } as sharp.OverlayOptions]);
  if (o.format === 'jpeg') return img.jpeg({ quality: 90 }).toBuffer();
  if (o.format === 'webp') return img.webp({ quality: 85, effort: 2 }).toBuffer();
  // zlib level 3 instead of 6: about as small on photographs, much faster to write
  return img.png({ compressionLevel: 3 }).toBuffer();
}

/**
 * A small JPEG of an annotated field for reports, as a data: URI (null when the image
 * cannot be read: the report still lists the field).
 */
export async function thumbnail(path: string, dets: Detection[], o: DrawOptions & { width?: number }): Promise<string | null> {
  try {
    const png = await drawAnnotated(path, dets, { ...o, labels: false, format: 'jpeg' });
    const jpg = await sharp(png)
      .resize({ width: o.width ?? 240, withoutEnlargement: true })
      .jpeg({ quality: 72 })
      .toBuffer();
    return `data:image/jpeg;base64,${jpg.toString('base64')}`;
  } catch {
    return null;
  }
}

/** A report figure (SVG text) as PNG bytes at print resolution (300 dpi: 4.2x the SVG's pixels). */
export async function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 300 }).png().toBuffer();
}
