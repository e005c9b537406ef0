// A small line chart on a canvas: time on x, one or more series on y, gaps where a value is
// NaN, colours from the page's CSS variables (so it follows the light or dark theme).

const PALETTE = ['--chart-1', '--chart-2', '--chart-3'];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function label(v, percent) {
  if (percent) return `${Math.round(v * 100)}%`;
  if (v === 0) return '0';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

/** Draws `series` ([{ label, data: [[t, y], ...] }]) over the time span [t0, t1]. */
export function lineChart(canvas, [t0, t1], series, { max, percent = false } = {}) {
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim() || '#888';
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
  if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 44;
  const right = 8;
  const top = 18;
  const bottom = 18;
  const values = series.flatMap((s) => s.data.map(([, y]) => y)).filter(Number.isFinite);
  const yMax = max ?? niceMax(Math.max(0, ...values));
  const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1)) * (width - left - right);
  const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.strokeStyle = color('--grid');
  ctx.fillStyle = color('--muted');
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, y(v));
    ctx.lineTo(width - right, y(v));
    ctx.stroke();
    ctx.fillText(label(v, percent), 2, y(v) + 4);
  }
  const secs = Math.round((t1 - t0) / 1000);
  ctx.fillText(secs < 120 ? `${secs} s ago` : `${Math.round(secs / 60)} min ago`, left, height - 4);
  ctx.fillText('now', width - right - 22, height - 4);
  series.forEach((s, i) => {
    const c = color(PALETTE[i % PALETTE.length]);
    ctx.strokeStyle = c;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    for (const [t, v] of s.data) {
      if (!Number.isFinite(v) || t < t0) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(t), y(Math.min(v, yMax)));
      else ctx.moveTo(x(t), y(Math.min(v, yMax)));
      drawing = true;
    }
    ctx.stroke();
    ctx.fillStyle = c;
    ctx.fillText(s.label, left + 8 + i * 70, 12);
  });
}
