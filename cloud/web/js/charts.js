// Time charts on uPlot (vendored): one or more series over time in seconds, with markers (bands for
// anomalies, vertical lines for alerts, horizontal lines for limits) and drag-to-zoom handed to the caller.

import { unitLabel } from './dom.js';

// uPlot (a classic script and its style sheet) is loaded by the first page that draws a chart, not by every
// page: the fleet view, the first page most sessions open, does not wait for 50 kB it does not use.
function load(tag, attrs) {
  return new Promise((resolve, reject) => {
    const el = Object.assign(document.createElement(tag), attrs);
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${attrs.src || attrs.href}`));
    document.head.append(el);
  });
}
await Promise.all([
  load('link', { rel: 'stylesheet', href: new URL('../vendor/uPlot.min.css', import.meta.url).href }),
  globalThis.uPlot || load('script', { src: new URL('../vendor/uPlot.iife.min.js', import.meta.url).href }),
]);

export const COLORS = ['#2563eb', '#db2777', '#059669', '#d97706', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

function markersPlugin(getMarkers) {
  const draw = (u) => {
    const { bands = [], lines = [], limits = [] } = getMarkers();
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const px = devicePixelRatio;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    for (const { from, to, color } of bands) {
      const x0 = u.valToPos(from, 'x', true);
      const x1 = u.valToPos(to, 'x', true);
      ctx.fillStyle = color;
      ctx.fillRect(x0, top, Math.max(x1 - x0, 3 * px), height);
    }
    ctx.lineWidth = 1.5 * px;
    ctx.setLineDash([5 * px, 4 * px]);
    for (const { at, color } of lines) {
      const x = u.valToPos(at, 'x', true);
      ctx.strokeStyle = color;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
    for (const { value, color } of limits) {
      const y = u.valToPos(value, 'y', true);
      ctx.strokeStyle = color;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
    }
    ctx.restore();
  };
  return { hooks: { draw: [draw] } };
}

// el: the container; series: [{label, unit, color}]; markers(): {bands, lines, limits} in chart units;
// onZoom(minS, maxS): called when the user drags a time window (the caller loads it).
export function timeChart(el, { series, markers = () => ({}), onZoom, height = 170, syncKey, time = true }) {
  const unit = series[0]?.unit;
  const include = () => (markers().limits || []).map((l) => l.value);
  const opts = {
    width: Math.max(el.clientWidth, 300),
    height,
    cursor: { drag: { x: Boolean(onZoom), y: false, setScale: false }, sync: syncKey ? { key: syncKey } : undefined },
    scales: {
      x: { time },
      y: {
        range: (u, min, max) => {
          const vals = [min, max, ...include()].filter((v) => v != null && Number.isFinite(v));
          if (!vals.length) return [0, 1];
          const lo = Math.min(...vals);
          const hi = Math.max(...vals);
          const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
          return [lo - pad, hi + pad];
        },
      },
    },
    series: [{}, ...series.map((s, i) => ({
      label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 1.5, points: { show: false },
      dash: s.dash, value: (u, v) => (v == null ? '—' : `${v.toFixed(2)} ${unitLabel(s.unit)}`),
    }))],
    axes: [{}, { size: 56, label: unitLabel(unit) || undefined, labelSize: 18 }],
    plugins: [markersPlugin(markers)],
    hooks: {
      setSelect: [(u) => {
        if (!onZoom || u.select.width < 4) return;
        const min = u.posToVal(u.select.left, 'x');
        const max = u.posToVal(u.select.left + u.select.width, 'x');
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onZoom(min, max);
      }],
    },
  };
  const u = new uPlot(opts, [[], ...series.map(() => [])], el);
  const resize = new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 300), height }));
  resize.observe(el);
  return {
    u,
    // data: [xSeconds[], ...ys[]]; range: {min, max} in seconds, or null to fit the data.
    set(data, range) {
      u.setData(data, !range);
      if (range) u.setScale('x', range);
    },
    redraw: () => u.redraw(false),
    destroy() { resize.disconnect(); u.destroy(); },
  };
}
