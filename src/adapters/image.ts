/**
 * Images through sharp: decoding (EXIF orientation, grey / 16-bit / alpha -> 8-bit sRGB),
 * region reads for tiling, tensors for the network, and the annotated picture.
 */
import { constants, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { access, type FileHandle, mkdtemp, open, readFile, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { crop } from '../core/pipeline.js';
import { ATLAS_COUNT, ATLAS_FIRST, annotationLayout, atlasCell, drawAnnotations, type GlyphAtlas, type LegendLayout, legendLayout } from '../core/raster.js';
import type { Detection, ModelMetadata, PerClass } from '../core/types.js';

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

/**
 * Files up to this size are read into memory once and decoded from there: libvips decodes a
 * 640 x 480 JPEG from memory in 1.6 ms against 2.0 ms from its file (one-off timing, AVX-512
 * host), and the header probe reads no file again. Larger files (tiled smears) stay on disk.
 */
export const IN_MEMORY_BYTES = 16 * 2 ** 20;

function describe(e: unknown): string {
  const m = (e as Error).message ?? String(e);
  if (/unsupported image format/i.test(m)) return 'not an image in a format hemocount reads (JPEG, PNG, TIFF, WebP, GIF or AVIF)';
  // a decoder warning made an error by failOn: a damaged file (in a worker thread libvips may not say which warning)
  if (/premature end|truncated|corrupt|unexpected end|Invalid|bad seek|Warning treated as error|read error/i.test(m))
    return `corrupt or truncated image (${m.trim().split('\n')[0] ?? m})`;
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

/**
 * Width x height from a JPEG's frame header or a PNG's IHDR chunk, without decoding; null for
 * other formats or a header it cannot read (the caller then asks libvips). EXIF orientation
 * swaps the sides but not their product.
 */
export function headerPixels(b: Uint8Array): number | null {
  const be16 = (o: number) => (b[o]! << 8) | b[o + 1]!;
  const type = sniffImageType(b);
  if (type === 'png')
    return b.length >= 24 && b[12] === 0x49 && b[13] === 0x48 && b[14] === 0x44 && b[15] === 0x52
      ? (be16(16) * 65536 + be16(18)) * (be16(20) * 65536 + be16(22))
      : null;
  if (type !== 'jpeg') return null;
  for (let i = 2; i + 9 < b.length; ) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1]!;
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    // a start-of-frame marker (C0-CF but C4, C8, CC) holds the height and width
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return be16(i + 5) * be16(i + 7) || null;
    if (marker === 0xda || marker === 0xd9 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) return null;
    i += 2 + be16(i + 2);
  }
  return null;
}

/** The formats hemocount reads (sharp also rasterises SVG and PDF: drawings are not smears). */
const FORMATS = new Set(['jpeg', 'png', 'tiff', 'webp', 'gif', 'heif']);

/** A path that is no regular readable file gets its real reason (a FIFO would block the decoder). */
async function checkFile(path: string): Promise<number> {
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
  return st.size;
}

/**
 * An image file as the source to decode: its bytes when it is small (IN_MEMORY_BYTES), else
 * the path. Errors name the file; the bytes' decoders are given `path` as their name.
 */
export async function imageSource(path: string): Promise<string | Uint8Array> {
  const quick = readSmallFile(path);
  if (quick) return quick;
  const size = await checkFile(path);
  if (size === 0) throw new Error(`${path}: empty file (0 bytes)`);
  if (size > IN_MEMORY_BYTES) return path;
  let b: Buffer;
  try {
    b = await readFile(path);
  } catch (e) {
    throw new Error(`${path}: ${describe(e)}`);
  }
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

/**
 * Files of up to this size are read synchronously: a smear photograph (30-600 KB) is read in
 * about 0.03 ms where the asynchronous stat, access and read took 0.35 ms, a thirtieth of a
 * whole count, and the event loop waits no longer than that read (under a millisecond).
 */
export const SYNC_READ_BYTES = 2 ** 20;

/** A small regular file's bytes, or null for anything else (left to the checks of imageSource). */
function readSmallFile(path: string): Uint8Array | null {
  try {
    // stat first: opening a FIFO would wait for a writer
    const st = statSync(path);
    if (!st.isFile() || st.size === 0 || st.size > SYNC_READ_BYTES) return null;
    const b = readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  } catch {
    return null; // the asynchronous path says why
  }
}

/** Width and height after EXIF orientation, from the header only. */
export async function probe(input: ImageInput, name = nameOf(input)): Promise<{ width: number; height: number; format: string }> {
  if (isRaw(input)) return { width: input.width, height: input.height, format: 'raw' };
  if (typeof input === 'string') await checkFile(input);
  try {
    const m = await sharp(input, { limitInputPixels: false }).metadata();
    if (!m.format || !FORMATS.has(m.format)) throw new Error('unsupported image format');
    if (!m.width || !m.height) throw new Error('image has no size');
    const swap = (m.orientation ?? 1) >= 5;
    return { width: swap ? m.height : m.width, height: swap ? m.width : m.height, format: m.format ?? 'unknown' };
  } catch (e) {
    throw new Error(`${name}: ${describe(e)}`);
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
export async function decodeRgb(input: ImageInput, name = nameOf(input)): Promise<RawImage> {
  return isRaw(input) ? input : decodeWhole(input, false, 0, name);
}

/** The whole image as 8-bit RGB, with `bottom` white rows added below it. */
async function decodeWhole(input: string | Uint8Array, huge: boolean, bottom = 0, name = nameOf(input)): Promise<RawImage> {
  try {
    const img = pipeline(input, huge).removeAlpha();
    if (bottom > 0) img.extend({ bottom, background: '#ffffff' });
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw new Error(`${name}: ${describe(e)}`);
  }
}

/**
 * For programs that read each image once (the CLI, the server): libvips' operation cache then
 * only holds memory (about 30 MB more at the peak of a 12000 x 9000 smear). Process-wide, so
 * the library leaves it to the program.
 */
export function readImagesOnce(): void {
  sharp.cache(false);
}

/** One region of a (possibly huge) image; memory is that of the region, not the image. */
export async function readRegion(input: ImageInput, left: number, top: number, width: number, height: number, name = nameOf(input)): Promise<RawImage> {
  if (isRaw(input)) return crop(input, left, top, width, height) as RawImage;
  try {
    const { data, info } = await pipeline(input, true).extract({ left, top, width, height }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: 3 };
  } catch (e) {
    throw new Error(`${name}: ${describe(e)}`);
  }
}

export interface Regions {
  read(left: number, top: number, width: number, height: number): Promise<RawImage>;
  /** Gives back the decoded copy (the file handle); reads after it decode again. */
  close(): Promise<void>;
}

/** libvips' own uncompressed format: a 64-byte header (little-endian words), then the pixels. */
const VIPS_HEADER = 64;
const TMPFS = 0x01021994;
/** Copies this thread holds open: one at a time, so the temporary space is one image per worker. */
let copies = 0;

/** Removes the copies in `dir` of the processes `whose` picks (a copy's folder names its pid). */
function removeCopies(dir: string, whose: (pid: number) => boolean): void {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/^hemocount-v(\d+)-/.exec(n)?.[1] ?? Number.NaN);
    if (!Number.isInteger(pid) || !whose(pid)) continue;
    try {
      rmSync(join(dir, n), { recursive: true, force: true });
    } catch {
      // left to the next run's sweep
    }
  }
}

/** A process that is gone (one alive, or not ours to judge, is left alone). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Removes this process's copies at once (its worker threads share its pid): for a program
 * stopped by a signal while a worker writes one, before the copy is open and unlinked.
 */
export function removeOwnCopies(): void {
  removeCopies(tmpdir(), (pid) => pid === process.pid);
}

/**
 * Regions of a huge image, decoded once. A region read from a JPEG decodes it from the top
 * down to the region, so a tiled smear cost three to four whole decodes; here the first read
 * decodes the image once into an uncompressed libvips file in the temporary folder (3 bytes a
 * pixel), unlinked as soon as it is open, and every region is then a file read. Each region is
 * decoded as before where the folder is RAM (tmpfs: the copy would be memory outside the
 * process's own), lacks the room, fails, or this thread already holds a copy (images in flight
 * would each hold one); a damaged image fails there with its usual message.
 */
export function regions(input: string | Uint8Array, width: number, height: number, name = nameOf(input)): Regions {
  let file: Promise<FileHandle | null> | null = null;
  let held = false;
  const decodeOnce = async (): Promise<FileHandle | null> => {
    const root = tmpdir();
    const fs = await statfs(root).catch(() => null);
    const need = width * height * 3;
    if (copies > 0 || !fs || fs.type === TMPFS || fs.bavail * fs.bsize < need + 512 * 2 ** 20) return null;
    copies++;
    held = true;
    removeCopies(root, (pid) => pid !== process.pid && gone(pid)); // left by processes killed while writing one
    let dir: string | null = null;
    let fh: FileHandle | null = null;
    try {
      dir = await mkdtemp(join(root, `hemocount-v${process.pid}-`));
      const path = join(dir, 'pixels.v');
      await pipeline(input, true).removeAlpha().toFile(path);
      fh = await open(path, 'r');
      const head = Buffer.alloc(VIPS_HEADER);
      await fh.read(head, 0, VIPS_HEADER, 0);
      // 3 bands of unsigned bytes, uncoded, the size the header probe gave
      const ok =
        head.readUInt32BE(0) === 0xb6a6f208 &&
        head.readInt32LE(4) === width &&
        head.readInt32LE(8) === height &&
        head.readInt32LE(12) === 3 &&
        head.readInt32LE(20) === 0 &&
        head.readInt32LE(24) === 0;
      if (!ok) throw new Error('unexpected copy');
    } catch {
      await fh?.close().catch(() => {});
      fh = null;
    }
    // the open handle keeps the data; a folder that cannot be removed (NFS) is no reason to fail
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    if (!fh) release();
    return fh;
  };
  const release = () => {
    if (held) copies--;
    held = false;
  };
  return {
    async read(left, top, w, h) {
      file ??= decodeOnce();
      const fh = await file;
      if (!fh) return readRegion(input, left, top, w, h, name);
      const data = new Uint8Array(w * h * 3);
      const rows = w === width ? [[0, h]] : Array.from({ length: h }, (_, y) => [y, 1]);
      for (const [y, n] of rows as [number, number][]) {
        const at = VIPS_HEADER + ((top + y) * width + left) * 3;
        const { bytesRead } = await fh.read(data, y * w * 3, n * w * 3, at);
        if (bytesRead !== n * w * 3) throw new Error(`${name}: the decoded copy ended early`);
      }
      return { data, width: w, height: h, channels: 3 };
    },
    async close() {
      const fh = await file;
      file = null;
      release();
      await fh?.close();
    },
  };
}

export interface DrawOptions {
  meta: ModelMetadata;
  counts: PerClass<number>;
  uncertain: PerClass<number>;
  /** Label each box (default true). */
  labels?: boolean;
  /** Put the probability in the label (default true). */
  scores?: boolean;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

const MONO = 'DejaVu Sans Mono, monospace';
/** Glyph atlases by font size, rendered once each (labels are 9 to 28 px: at most 20 of them). */
const atlases = new Map<number, Promise<GlyphAtlas>>();

/** The label font's coverage masks at one size, rendered by sharp (librsvg) once and kept. */
export function glyphAtlas(fontSize: number): Promise<GlyphAtlas> {
  let a = atlases.get(fontSize);
  if (!a) {
    a = renderAtlas(fontSize);
    atlases.set(fontSize, a);
    a.catch(() => atlases.delete(fontSize));
  }
  return a;
}

async function renderAtlas(fontSize: number): Promise<GlyphAtlas> {
  const { cellWidth: cw, cellHeight: ch, originX, baseline } = atlasCell(fontSize);
  // one row of cells, each character alone in its own, white on transparent
  const texts: string[] = [];
  for (let g = 1; g < ATLAS_COUNT; g++) {
    const c = String.fromCharCode(ATLAS_FIRST + g);
    texts.push(`<text x="${g * cw + originX}" y="${baseline}">${esc(c)}</text>`);
  }
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${ATLAS_COUNT * cw}" height="${ch}">` +
    `<g font-family="${MONO}" font-size="${fontSize}" fill="#fff">${texts.join('')}</g></svg>`;
  const { data, info } = await sharp(Buffer.from(svg)).ensureAlpha().extractChannel(3).raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 1 || info.width !== ATLAS_COUNT * cw || info.height !== ch)
    throw new Error(`glyph atlas rendered as ${info.width} x ${info.height} x ${info.channels}`);
  // cell after cell, so that a glyph's mask is contiguous
  const mask = new Uint8Array(ATLAS_COUNT * cw * ch);
  for (let g = 0; g < ATLAS_COUNT; g++)
    for (let y = 0; y < ch; y++) mask.set(data.subarray(y * info.width + g * cw, y * info.width + (g + 1) * cw), (g * ch + y) * cw);
  return { fontSize, cellWidth: cw, cellHeight: ch, originX, baseline, mask };
}

/**
 * The legend strip below the picture as RGB pixels (width x legend.height): a small SVG
 * (proportional text) on white, rendered by sharp (librsvg).
 */
async function legendPixels(width: number, height: number, legend: LegendLayout): Promise<Uint8Array> {
  const fs = legend.fontSize;
  const parts = legend.entries.map(
    ({ x, y, colour, text }) =>
      `<rect x="${x}" y="${y - height}" width="${fs}" height="${fs}" fill="${colour}"/>` +
      `<text x="${x + fs + 6}" y="${y - height + fs - 2}">${esc(text)}</text>`,
  );
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${legend.height}">` +
    `<g font-family="DejaVu Sans, sans-serif" font-size="${fs}" fill="#000">${parts.join('')}</g></svg>`;
  const { data, info } = await sharp(Buffer.from(svg), { limitInputPixels: false })
    .flatten({ background: '#ffffff' })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== legend.height || info.channels !== 3)
    throw new Error(`legend rendered as ${info.width} x ${info.height} x ${info.channels}`);
  return data;
}

/**
 * The annotated picture as PNG, JPEG or WebP bytes: boxes in the paper's colours, label and
 * probability above each (dashed boxes and "?" for cells to review), and the counts in a
 * legend strip below the picture. Boxes and labels are drawn into the pixels (a glyph atlas
 * for the text), the legend strip is rendered on its own; the caller's pixels are not changed.
 */
export async function drawAnnotated(input: ImageInput, dets: Detection[], o: DrawOptions & { format?: 'png' | 'jpeg' | 'webp' }): Promise<Uint8Array> {
  const { width, height } = await probe(input);
  const huge = width * height > 268e6;
  const colours = Object.fromEntries(o.meta.classes.map((c) => [c.name, c.colour]));
  const layout = annotationLayout(width, height, dets, { colours, labels: o.labels, scores: o.scores });
  const legend = legendLayout(width, height, o.counts, o.uncertain, colours);
  const size = width * height * 3;
  // the picture with room for the strip below it, in a buffer of our own; atlas and legend meanwhile
  const [img, atlas, strip] = await Promise.all([
    isRaw(input) ? ownCopy(input, size + width * legend.height * 3) : decodeWhole(input, huge, legend.height),
    layout.boxes.some((b) => b.label) ? glyphAtlas(layout.fontSize) : null,
    legendPixels(width, height, legend),
  ]);
  if (img.width !== width || img.data.length !== size + strip.length)
    throw new Error(`image: decoded as ${img.width} x ${img.height}, not ${width} x ${height}`);
  drawAnnotations({ data: img.data, width, height, channels: 3 }, layout, atlas);
  img.data.set(strip, size);
  const out = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), {
    raw: { width, height: height + legend.height, channels: 3 },
    limitInputPixels: huge ? HUGE_PIXEL_LIMIT : undefined,
  });
  if (o.format === 'jpeg') return out.jpeg({ quality: 90 }).toBuffer();
  if (o.format === 'webp') return out.webp({ quality: 85, effort: 2 }).toBuffer();
  // zlib level 3 instead of 6: about as small on photographs, much faster to write
  return out.png({ compressionLevel: 3 }).toBuffer();
}

/** Raw pixels copied into a new buffer of `bytes` bytes (the caller's are never drawn on). */
async function ownCopy(input: RawImage, bytes: number): Promise<RawImage> {
  if (input.data.length !== input.width * input.height * 3) {
    throw new Error(`image: ${input.width} x ${input.height} RGB pixels need ${input.width * input.height * 3} bytes, not ${input.data.length}`);
  }
  const data = new Uint8Array(bytes);
  data.set(input.data);
  return { data, width: input.width, height: bytes / (input.width * 3), channels: 3 };
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
export async function svgToPng(svg: string): Promise<Uint8Array> {
  return sharp(Buffer.from(svg), { density: 300 }).png().toBuffer();
}
