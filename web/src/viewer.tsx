/** The annotated image on a canvas: zoom (wheel), pan (drag), hover, and in review mode select / draw boxes. */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { ReviewedDetection } from '../../src/core/review.js';
import type { Box, CellClass } from '../../src/core/types.js';
import { drawDetections } from './draw.js';

export interface ViewerProps {
  blob: Blob;
  width: number;
  height: number;
  detections: ReviewedDetection[];
  visible: Record<CellClass, boolean>;
  reviewMode: boolean;
  selected: number | null;
  onSelect: (id: number | null) => void;
  onAdd: (box: Box) => void;
  /** The boxes come from a label file (no probabilities). */
  fromLabels?: boolean;
}

interface View {
  scale: number;
  ox: number;
  oy: number;
}

export function Viewer(p: ViewerProps) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [img, setImg] = useState<ImageBitmap | null>(null);
  const view = useRef<View>({ scale: 1, ox: 0, oy: 0 });
  const drag = useRef<{ kind: 'pan' | 'draw'; x: number; y: number; ix: number; iy: number; moved: boolean } | null>(null);
  const draft = useRef<Box | null>(null);
  const [hover, setHover] = useState<{ x: number; y: number; text: string } | null>(null);
  const frame = useRef(0);

  useEffect(() => {
    let alive = true;
    createImageBitmap(p.blob, { imageOrientation: 'from-image' }).then((b) => {
      if (!alive) return;
      setImg(b);
      fit(b.width, b.height);
    });
    return () => {
      alive = false;
    };
  }, [p.blob]);

  const fit = (w: number, h: number) => {
    const c = canvas.current!;
    const s = Math.min(c.clientWidth / w, c.clientHeight / h);
    view.current = { scale: s, ox: (c.clientWidth - w * s) / 2, oy: (c.clientHeight - h * s) / 2 };
    redraw();
  };

  const redraw = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => {
      const c = canvas.current;
      if (!c || !img) return;
      const dpr = window.devicePixelRatio || 1;
      if (c.width !== c.clientWidth * dpr || c.height !== c.clientHeight * dpr) {
        c.width = c.clientWidth * dpr;
        c.height = c.clientHeight * dpr;
      }
      const ctx = c.getContext('2d')!;
      const v = view.current;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = '#222';
      ctx.fillRect(0, 0, c.width, c.height);
      ctx.setTransform(v.scale * dpr, 0, 0, v.scale * dpr, v.ox * dpr, v.oy * dpr);
      ctx.drawImage(img, 0, 0);
      drawDetections(ctx, p.detections, {
        scale: v.scale,
        visible: p.visible,
        selected: p.selected,
        imageWidth: p.width,
        labels: v.scale > 0.6,
        fromLabels: p.fromLabels,
      });
      if (draft.current) {
        const [x1, y1, x2, y2] = draft.current;
        ctx.strokeStyle = '#fff';
        ctx.setLineDash([6 / v.scale, 4 / v.scale]);
        ctx.lineWidth = 2 / v.scale;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
        ctx.setLineDash([]);
      }
      // where image pixels land on the canvas, for tools that click on a cell (and the browser tests)
      c.dataset.view = JSON.stringify(v);
    });
  };
  useEffect(redraw, [img, p.detections, p.visible, p.selected]);
  useEffect(() => {
    const onResize = () => redraw();
    window.addEventListener('resize', onResize);
    return () => window.removeEventListener('resize', onResize);
  });

  const toImage = (e: MouseEvent): [number, number] => {
    const r = canvas.current!.getBoundingClientRect();
    const v = view.current;
    return [(e.clientX - r.left - v.ox) / v.scale, (e.clientY - r.top - v.oy) / v.scale];
  };
  const hit = (x: number, y: number) => {
    // the smallest visible box under the pointer: a platelet on top of a red cell wins
    const under = p.detections.filter((d) => p.visible[d.label] && x >= d.box[0] && x <= d.box[2] && y >= d.box[1] && y <= d.box[3]);
    under.sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
    return under[0] ?? null;
  };

  const onWheel = (e: WheelEvent) => {
    e.preventDefault();
    const r = canvas.current!.getBoundingClientRect();
    const mx = e.clientX - r.left;
    const my = e.clientY - r.top;
    const v = view.current;
    const f = Math.exp(-e.deltaY * 0.0015);
    const s = Math.min(40, Math.max(0.05, v.scale * f));
    view.current = { scale: s, ox: mx - ((mx - v.ox) * s) / v.scale, oy: my - ((my - v.oy) * s) / v.scale };
    redraw();
  };
  const onDown = (e: MouseEvent) => {
    const [ix, iy] = toImage(e);
    const draw = p.reviewMode && e.button === 0 && !e.altKey && !hit(ix, iy);
    drag.current = { kind: draw ? 'draw' : 'pan', x: e.clientX, y: e.clientY, ix, iy, moved: false };
  };
  const onMove = (e: MouseEvent) => {
    const d = drag.current;
    const [ix, iy] = toImage(e);
    if (d) {
      if (Math.abs(e.clientX - d.x) + Math.abs(e.clientY - d.y) > 3) d.moved = true;
      if (d.kind === 'pan') {
        view.current.ox += e.clientX - d.x;
        view.current.oy += e.clientY - d.y;
        d.x = e.clientX;
        d.y = e.clientY;
      } else draft.current = [Math.min(d.ix, ix), Math.min(d.iy, iy), Math.max(d.ix, ix), Math.max(d.iy, iy)];
      redraw();
      return;
    }
    const h = hit(ix, iy);
    setHover(
      h
        ? {
            x: e.offsetX + 14,
            y: e.offsetY + 14,
            text: `${h.label} ${h.added ? '(added)' : h.score.toFixed(3)}${h.uncertain ? ' - to review' : ''}`,
          }
        : null,
    );
  };
  const onUp = (e: MouseEvent) => {
    const d = drag.current;
    drag.current = null;
    const [ix, iy] = toImage(e);
    if (d?.kind === 'draw' && draft.current) {
      const b = draft.current;
      draft.current = null;
      if (b[2] - b[0] >= 4 && b[3] - b[1] >= 4) {
        p.onAdd([Math.max(0, b[0]), Math.max(0, b[1]), Math.min(p.width, b[2]), Math.min(p.height, b[3])]);
      }
      redraw();
      return;
    }
    if (d && !d.moved && p.reviewMode) p.onSelect(hit(ix, iy)?.id ?? null);
  };

  return (
    <div class="viewer">
      <canvas
        ref={canvas}
        data-testid="canvas"
        onWheel={onWheel}
        onMouseDown={onDown}
        onMouseMove={onMove}
        onMouseUp={onUp}
        onMouseLeave={() => {
          drag.current = null;
          setHover(null);
        }}
        onDblClick={() => img && fit(img.width, img.height)}
        style={{ cursor: p.reviewMode ? 'crosshair' : 'grab' }}
      />
      {hover && (
        <div class="tip" style={{ left: hover.x, top: hover.y }}>
          {hover.text}
        </div>
      )}
    </div>
  );
}
