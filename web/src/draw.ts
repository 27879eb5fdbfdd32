/** Drawing detections on a 2D canvas (the viewer and the exported PNG share it). */
import { scoreLabel } from '../../src/core/raster.js';
import type { ReviewedDetection } from '../../src/core/review.js';
import type { CellClass } from '../../src/core/types.js';
import { COLOURS, SHORT } from '../../src/core/vocabulary.js';

export { COLOURS };

export function drawDetections(
  ctx: CanvasRenderingContext2D | OffscreenCanvasRenderingContext2D,
  dets: ReviewedDetection[],
  o: {
    scale: number;
    visible: Record<CellClass, boolean>;
    selected?: number | null;
    labels?: boolean;
    imageWidth: number;
    /** The boxes come from a label file: they carry no model probability to show. */
    fromLabels?: boolean;
  },
) {
  const lw = Math.max(1.5, 1.6 * Math.max(1, o.imageWidth / 640)) / o.scale;
  const fs = Math.max(9, 11 * Math.max(1, o.imageWidth / 640)) / Math.max(o.scale, 0.5);
  ctx.font = `${fs}px DejaVu Sans Mono, monospace`;
  for (const d of [...dets].sort((a, b) => a.score - b.score)) {
    if (!o.visible[d.label]) continue;
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = COLOURS[d.label];
    ctx.lineWidth = d.id === o.selected ? lw * 2.5 : lw;
    ctx.setLineDash(d.uncertain ? [4 / o.scale, 3 / o.scale] : []);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (o.labels !== false) {
      const text = `${SHORT[d.label]} ${d.added ? 'added' : o.fromLabels ? 'label' : scoreLabel(d.score)}${d.uncertain ? '?' : ''}`;
      const tw = ctx.measureText(text).width + 4;
      const ty = y1 >= fs + 2 ? y1 - fs - 2 : y1;
      ctx.globalAlpha = 0.75;
      ctx.fillStyle = COLOURS[d.label];
      ctx.fillRect(x1, ty, tw, fs + 2);
      ctx.globalAlpha = 1;
      ctx.fillStyle = d.label === 'Platelets' ? '#fff' : '#000'; // legible on dark blue
      ctx.fillText(text, x1 + 2, ty + fs - 1);
    }
  }
  ctx.setLineDash([]);
}
