/** core/raster: frames, dashes, label backgrounds and atlas text drawn into RGB pixels, and the labels' layout. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Pixels } from '../../src/core/pipeline.js';
import {
  ATLAS_COUNT,
  ATLAS_FIRST,
  annotationLayout,
  blendRect,
  drawAnnotations,
  drawFrame,
  drawText,
  type GlyphAtlas,
  parseColour,
  textOn,
  scoreLabel,
} from '../../src/core/raster.js';
import type { Detection } from '../../src/core/types.js';

const blank = (width: number, height: number): Pixels => ({ data: new Uint8Array(width * height * 3).fill(255), width, height, channels: 3 });
const px = (img: Pixels, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];
const isRed = (img: Pixels, x: number, y: number) => px(img, x, y).join() === '255,0,0';
const colours = { RBC: '#ff8c00', WBC: '#66ccff', Platelets: '#1f3fbf' };

test('colours: #rgb and #rrggbb; black text on light backgrounds, white on dark', () => {
  assert.equal(parseColour('#ff8c00'), 0xff8c00);
  assert.equal(parseColour('#fff'), 0xffffff);
  assert.throws(() => parseColour('#12'), /not a colour/);
  assert.equal(textOn('#ff8c00'), '#000');
  assert.equal(textOn('#1f3fbf'), '#fff');
});

test('a frame is an integer line thickness centred on the box edges, clipped to the picture', () => {
  const img = blank(40, 30);
  drawFrame(img, 10.3, 5.6, 30.2, 20.4, 2, 0xff0000);
  // left edge centred on 10.3: columns 9 and 10; right edge on 30.2: columns 29 and 30
  for (const x of [8, 9, 10, 11, 28, 29, 30, 31]) assert.equal(isRed(img, x, 12), [9, 10, 29, 30].includes(x), `column ${x}`);
  // top edge on 5.6: rows 5 and 6; bottom on 20.4: rows 19 and 20
  for (const y of [4, 5, 6, 7, 18, 19, 20, 21]) assert.equal(isRed(img, 20, y), [5, 6, 19, 20].includes(y), `row ${y}`);
  assert.ok(isRed(img, 9, 5) && isRed(img, 30, 20), 'corners closed');
  assert.deepEqual(px(img, 20, 12), [255, 255, 255], 'inside untouched');
  // a box over the picture's corner draws what lies inside it, and nothing throws
  const cut = blank(20, 20);
  drawFrame(cut, -10, -10, 10, 10, 3, 0xff0000);
  assert.ok(isRed(cut, 9, 5) && isRed(cut, 5, 10));
  drawFrame(cut, 50, 50, 60, 60, 3, 0xff0000);
  drawFrame(cut, -60, -60, -50, -50, 3, 0xff0000);
});

test('dashed frames: on 4, off 3 stroke widths, round the corners', () => {
  const img = blank(120, 120);
  drawFrame(img, 10, 10, 110, 110, 2, 0xff0000, [8, 6]);
  const runs = (xs: boolean[]) => {
    const out: number[] = [];
    let n = 0;
    for (const v of xs) {
      if (v) n++;
      else if (n) {
        out.push(n);
        n = 0;
      }
    }
    return out;
  };
  const top = Array.from({ length: 120 }, (_, x) => isRed(img, x, 10));
  const on = top.filter(Boolean).length;
  assert.ok(on > 100 * (8 / 14) - 8 && on < 100 * (8 / 14) + 8, `${on} of ~100 px on`);
  assert.ok(
    runs(top)
      .slice(0, -1)
      .every((n) => n === 8),
    `dashes ${runs(top)}`,
  );
  for (const [x, y] of [
    [110, 60],
    [60, 110],
    [10, 60],
  ] as const)
    assert.ok(
      Array.from({ length: 14 }, (_, i) => (x === 60 ? isRed(img, x - 7 + i, y) : isRed(img, x, y - 7 + i))).some(Boolean),
      `dashes on every side (${x}, ${y})`,
    );
});

test('label backgrounds blend at 0.75; atlas text blends by coverage', () => {
  const img = blank(10, 10);
  blendRect(img, 2, 2, 5, 5, 0x000000, 192);
  assert.deepEqual(px(img, 3, 3), [64, 64, 64]);
  assert.deepEqual(px(img, 6, 6), [255, 255, 255]);
  // an atlas of 4x4 cells whose glyph "A" is opaque on its left half, half covered on its right
  const cw = 4;
  const ch = 4;
  const mask = new Uint8Array(ATLAS_COUNT * cw * ch);
  const a = ('A'.charCodeAt(0) - ATLAS_FIRST) * cw * ch;
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) mask[a + y * cw + x] = x < 2 ? 255 : 128;
  const atlas: GlyphAtlas = { fontSize: 5, cellWidth: cw, cellHeight: ch, originX: 0, baseline: 3, mask };
  const t = blank(20, 10);
  drawText(t, atlas, 'A A', 1, 5, 0x000000);
  assert.deepEqual(px(t, 1, 2), [0, 0, 0]);
  assert.deepEqual(px(t, 3, 2), [127, 127, 127]);
  assert.deepEqual(px(t, 1, 6), [255, 255, 255], 'below the cell');
  assert.deepEqual(px(t, 5, 3), [255, 255, 255], 'space');
  assert.deepEqual(px(t, 7, 3), [0, 0, 0], 'third character at 2 x 0.6 x 5 px');
  drawText(t, atlas, 'AAAAAAAA\u00e9', 15, 1, 0x000000); // clipped at the right and the top, no throw
});

test('label layout: above the box when there is room, else inside; inside the picture; low scores first', () => {
  const dets: Detection[] = [
    { label: 'WBC', score: 0.95, uncertain: false, box: [600, 200, 700, 300] },
    { label: 'RBC', score: 0.4, uncertain: true, box: [10, 3, 106, 99] },
  ];
  const l = annotationLayout(640, 480, dets, { colours });
  assert.deepEqual(
    l.boxes.map((b) => [b.label?.text, b.dashed]),
    [
      ['RBC 0.40?', true],
      ['WBC 0.95', false],
    ],
  );
  const [rbc, wbc] = l.boxes.map((b) => b.label!);
  assert.equal(rbc!.y, 3, 'no room above: inside');
  assert.equal(wbc!.y, 200 - l.fontSize - 2);
  assert.ok(wbc!.x + wbc!.width <= 640 && wbc!.x < 600, 'pulled inside the picture');
  assert.equal(l.thickness, Math.max(1, Math.round(l.stroke)));
  assert.throws(() => annotationLayout(640, 480, [{ ...dets[0]!, label: 'Platelets' }], { colours: { RBC: '#ff0000' } }), /no colour for class Platelets/);
  // labels need the atlas of their size
  assert.throws(() => drawAnnotations(blank(640, 480), l, null), /glyph atlas/);
  drawAnnotations(blank(640, 480), annotationLayout(640, 480, dets, { colours, labels: false }), null);
});

test("a box label's probability never crosses a two-decimal threshold: cut, not rounded", () => {
  assert.equal(scoreLabel(0.5692), '0.56');
  assert.equal(scoreLabel(0.57), '0.57');
  assert.equal(scoreLabel(Math.fround(0.57)), '0.56'); // float32 0.57 lies below 0.57: uncertain, so shown below it
  assert.equal(scoreLabel(1), '1.00');
  let seed = 11;
  const rnd = () => {
    seed = (seed * 16807) % 2147483647;
    return seed / 2147483647;
  };
  for (let i = 0; i < 20000; i++) {
    const t = Math.round(rnd() * 100) / 100;
    const s = rnd() < 0.5 ? Math.fround(rnd()) : t + (rnd() - 0.5) * 1e-6;
    assert.equal(Number(scoreLabel(s)) >= t, s >= t, `score ${s}, threshold ${t}`);
  }
});
