/**
 * The web app's work without the page: counting files (server or private mode), the
 * sample's count document, pictures and downloads. The components in main.tsx and
 * panels.tsx call these.
 */
import { checkBox, type CountDocument, countDocument, type ImageResult, parseVoc } from '../../src/core/formats.js';
import type { GroundTruthBox } from '../../src/core/metrics.js';
import { noCorrections, type Reviewed, type ReviewedDetection } from '../../src/core/review.js';
import { rbcCountProblem } from '../../src/core/samples.js';
import { type CellClass, type ModelMetadata, perClass, type Thresholds } from '../../src/core/types.js';
import { drawDetections } from './draw.js';
import { detectInBrowser } from './private.js';
import type { Item, SampleInfo } from './store.js';

export interface ModelInfo {
  name: string;
  version: string;
  sha256: string;
  metadata: ModelMetadata;
  limits?: { maxPixels?: number };
}

export function download(name: string, data: Blob | string, type = 'application/octet-stream') {
  const blob = typeof data === 'string' ? new Blob([data], { type }) : data;
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

export const stem = (n: string) => n.replace(/\.[^.]+$/, '');

/** Count files on the server, or in this browser (private mode); errors name the file. */
export async function countFiles(
  files: File[],
  privateMode: boolean,
  setBusy: (s: string | null) => void,
  maxPixels?: number,
  /** Make the background grey first; undefined: as the model was trained. */
  whiteBalance?: boolean,
): Promise<{ added: Item[]; errs: string[] }> {
  const added: Item[] = [];
  const errs: string[] = [];
  if (privateMode) {
    for (const [k, f] of files.entries()) {
      setBusy(`counting in this browser ${k + 1}/${files.length}: ${f.name}`);
      try {
        const r = await detectInBrowser(f, { maxPixels, whiteBalance });
        added.push({
          id: crypto.randomUUID(),
          name: f.name,
          width: r.width,
          height: r.height,
          candidates: r.candidates,
          mode: 'private',
          corrections: noCorrections(),
          blob: f,
        });
      } catch (e) {
        errs.push(`${f.name}: ${(e as Error).message}`);
      }
    }
  } else {
    // one image per request: a bad file fails alone, and a batch of any size keeps within the
    // server's per-request limits (files, megapixels)
    for (const [k, blob] of files.entries()) {
      setBusy(`counting on the server ${k + 1}/${files.length}: ${blob.name}`);
      const form = new FormData();
      form.append('images', blob, blob.name);
      if (whiteBalance !== undefined) form.append('white_balance', String(whiteBalance));
      try {
        const res = await fetch('/api/count', { method: 'POST', body: form });
        const body = await res.json();
        if (!res.ok) {
          const why: string = body.error ?? `the server answered ${res.status}`;
          errs.push(why.startsWith(blob.name) ? why : `${blob.name}: ${why}`);
          continue;
        }
        const r: ImageResult | undefined = (body as CountDocument).images[0];
        if (!r) errs.push(`${blob.name}: the server returned no result`);
        else if (r.error) errs.push(`${blob.name}: ${r.error}`);
        else
          added.push({
            id: crypto.randomUUID(),
            name: r.file,
            width: r.width,
            height: r.height,
            candidates: r.candidates ?? [],
            mode: 'server',
            corrections: noCorrections(),
            blob,
          });
      } catch (e) {
        errs.push(`${blob.name}: upload failed (${(e as Error).message})`);
      }
    }
  }
  return { added, errs };
}

/**
 * A label file's boxes scored so that the review logic applies to them unchanged: its cells
 * are counted, its difficult objects (undecided: a teacher's uncertain cells) sit in the
 * review band for a person to accept or reject. Fixed, so that the model's threshold
 * sliders do not move a file's labels.
 */
export const LABEL_THRESHOLDS: Thresholds = { count: perClass(() => 0.75), review: perClass(() => 0.25) };
const LABEL_SCORE = { cell: 1, undecided: 0.5 };

/**
 * Images that come with a VOC file of the same name (e.g. scripts/pseudo-labels.py's, or
 * one exported here) open with that file's boxes instead of the model's, to be reviewed.
 * Returns those items, the images left to count, and problems naming the file.
 */
export async function labelledItems(files: File[]): Promise<{ added: Item[]; rest: File[]; errs: string[] }> {
  const isXml = (f: File) => /\.xml$/i.test(f.name);
  const images = files.filter((f) => !isXml(f));
  const added: Item[] = [];
  const errs: string[] = [];
  const rest: File[] = [];
  const xmls = new Map<string, File>();
  for (const x of files.filter(isXml)) {
    if (xmls.has(stem(x.name))) errs.push(`${x.name}: a second label file for ${stem(x.name)}: not used`);
    else xmls.set(stem(x.name), x);
  }
  const sameStem = (f: File) => images.filter((g) => stem(g.name) === stem(f.name)).length;
  for (const f of images) {
    const x = xmls.get(stem(f.name));
    if (!x || sameStem(f) > 1) {
      if (x) errs.push(`${x.name}: names ${sameStem(f)} images added (${stem(f.name)}.*): not used; ${f.name} counted by the model`);
      rest.push(f);
      continue;
    }
    xmls.delete(stem(f.name));
    try {
      const ann = parseVoc(await x.text());
      const bmp = await createImageBitmap(f);
      const [width, height] = [bmp.width, bmp.height];
      bmp.close();
      const named = ann.filename?.split(/[\\/]/).pop();
      // cameras and copies change the extension's case (.JPG), which names no other image
      if (named && named.toLowerCase() !== f.name.toLowerCase()) throw new Error(`it describes ${named}, not ${f.name}`);
      if ((ann.width && ann.width !== width) || (ann.height && ann.height !== height))
        throw new Error(`it describes a ${ann.width}x${ann.height} image, ${f.name} is ${width}x${height}`);
      errs.push(...ann.problems.map((p) => `${x.name}: ${p}`));
      // a file without <size> was not clipped by the reader: clip to the image here
      const fit = (b: GroundTruthBox, score: number) => {
        const c = checkBox(b.box, width, height);
        if (c.problem) errs.push(`${x.name}: ${b.label} ${c.problem}`);
        return c.box ? [{ label: b.label, box: c.box, score }] : [];
      };
      const candidates = [...ann.boxes.flatMap((b) => fit(b, LABEL_SCORE.cell)), ...ann.undecided.flatMap((b) => fit(b, LABEL_SCORE.undecided))];
      added.push({ id: crypto.randomUUID(), name: f.name, width, height, candidates, mode: 'labels', corrections: noCorrections(), blob: f });
    } catch (e) {
      errs.push(`${x.name}: ${(e as Error).message}: not used; ${f.name} counted by the model`);
      rest.push(f);
    }
  }
  for (const x of xmls.values()) errs.push(`${x.name}: no image named ${stem(x.name)}.* among the files added`);
  return { added, rest, errs };
}

/** A valid analyser red-cell count per microlitre, or null (empty, or not one: rbcCountProblem says why). */
export function rbcPerUl(s: SampleInfo): number | null {
  const v = Number(s.rbcCount);
  return s.rbcCount.trim() && !rbcCountProblem(v) ? v : null;
}

/** The batch as one sample, reviewed: the same document the CLI writes. */
export function sampleDocument(list: Item[], reviewed: Map<string, Reviewed>, model: ModelInfo, th: Thresholds, sample: SampleInfo): CountDocument {
  const name = sample.name.trim() || 'sample';
  const images: ImageResult[] = list
    .filter((i) => !i.error)
    .map((i) => {
      const r = reviewed.get(i.id)!;
      const counted = r.detections.filter((d) => !d.uncertain);
      return {
        file: i.name,
        width: i.width,
        height: i.height,
        counts: r.corrected,
        uncertain: r.uncertain,
        meanScore: perClass((c) => {
          const s = counted.filter((d) => d.label === c && !d.added);
          return s.length && i.mode !== 'labels' ? s.reduce((a, d) => a + d.score, 0) / s.length : null;
        }),
        ...(i.mode === 'labels' && { labels: `${stem(i.name)}.xml` }),
        detections: r.detections.map(({ label, score, box, uncertain }) => ({ label, score, box, uncertain })),
        sample: name,
        ...(i.reviewed && { reviewed: i.reviewed }),
      };
    });
  const rbc = rbcPerUl(sample);
  return countDocument(model, th, images, rbc ? { [name]: rbc } : {});
}

/** A small annotated JPEG of a field for the sample report, as a data: URI. */
export async function thumbnail(i: Item, detections: ReviewedDetection[], visible: Record<CellClass, boolean>): Promise<string> {
  const bmp = await createImageBitmap(i.blob, { imageOrientation: 'from-image' });
  const k = Math.min(1, 240 / bmp.width);
  const c = new OffscreenCanvas(Math.round(bmp.width * k), Math.round(bmp.height * k));
  const ctx = c.getContext('2d')!;
  ctx.scale(k, k); // boxes are in image pixels
  ctx.drawImage(bmp, 0, 0);
  drawDetections(ctx, detections, { scale: k, visible, imageWidth: i.width, labels: false });
  const blob = await c.convertToBlob({ type: 'image/jpeg', quality: 0.72 });
  return new Promise((ok) => {
    const fr = new FileReader();
    fr.onload = () => ok(fr.result as string);
    fr.readAsDataURL(blob);
  });
}

/** The annotated picture as PNG, as drawn in the viewer. */
export async function annotatedPng(i: Item, detections: ReviewedDetection[], visible: Record<CellClass, boolean>): Promise<Blob> {
  const bmp = await createImageBitmap(i.blob, { imageOrientation: 'from-image' });
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = c.getContext('2d')!;
  ctx.drawImage(bmp, 0, 0);
  drawDetections(ctx, detections, { scale: 1, visible, imageWidth: i.width, fromLabels: i.mode === 'labels' });
  return c.convertToBlob({ type: 'image/png' });
}
