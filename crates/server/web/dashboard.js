// The dashboard: polls the server's public /api/ps, /metrics and /api/fleet every two seconds
// and keeps the last five minutes in memory. Rates and percentiles come from differences of
// successive scrapes of the Prometheus counters and histograms (as Prometheus' rate() and
// histogram_quantile() compute them).

import { api, el, formatBytes, formatDuration, showBanner } from './api.js';
import { lineChart } from './chart.js';

const POLL_MS = 2000;
const KEEP_MS = 5 * 60 * 1000;
const POLL_TIMEOUT_MS = 10000;
const $ = (id) => document.getElementById(id);

/** Prometheus text format: samples as { name, labels, value }. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** What one scrape says, summed over models. */
function digest(samples) {
  const sum = (name) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
  const buckets = (name) => {
    const by = new Map();
    for (const s of samples) {
      if (s.name !== `${name}_bucket`) continue;
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      by.set(le, (by.get(le) || 0) + s.value);
    }
    return [...by.entries()].sort((a, b) => a[0] - b[0]);
  };
  const errors = {};
  for (const s of samples) if (s.name === 'hyperllama_errors_total') errors[s.labels.code] = s.value;
  return {
    generated: sum('hyperllama_generation_tokens_total'),
    prompt: sum('hyperllama_prompt_tokens_total'),
    cached: sum('hyperllama_prefix_cache_hit_tokens_total'),
    running: sum('hyperllama_num_requests_running'),
    waiting: sum('hyperllama_num_requests_waiting'),
    ttft: buckets('hyperllama_time_to_first_token_seconds'),
    itl: buckets('hyperllama_inter_token_latency_seconds'),
    errors,
  };
}

/** The q-quantile of the observations between two cumulative bucket lists; NaN if none. */
function quantile(q, before, after) {
  const counts = after.map(([le, c]) => {
    const b = before.find(([l]) => l === le);
    return [le, c - (b ? b[1] : 0)];
  });
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of counts) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(c - prevCount, 1e-9));
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

const points = [];

/** The scrape closest to `ms` ago (or the oldest). */
function ago(ms, now) {
  for (const p of points) if (p.t >= now - ms) return p;
  return points[0];
}

function series(pick) {
  const out = [];
  for (let i = 1; i < points.length; i++) out.push([points[i].t, pick(points[i - 1], points[i])]);
  return out;
}

const perSecond = (field) => (a, b) => Math.max(0, b[field] - a[field]) / ((b.t - a.t) / 1000);

function windowed(ms, pick) {
  return series((_, b) => {
    const a = ago(ms, b.t);
    return a === b ? NaN : pick(a, b);
  });
}

function draw() {
  if (points.length < 2) return;
  const now = points[points.length - 1].t;
  // From the first scrape (at most five minutes back) to now, so a new page shows its data.
  const span = [Math.max(points[0].t, now - KEEP_MS), now];
  lineChart($('chart-tps'), span, [{ label: 'tok/s', data: series(perSecond('generated')) }]);
  lineChart($('chart-requests'), span, [
    { label: 'running', data: points.map((p) => [p.t, p.running]) },
    { label: 'waiting', data: points.map((p) => [p.t, p.waiting]) },
  ]);
  const q = (field, qq) => windowed(30000, (a, b) => quantile(qq, a[field], b[field]));
  lineChart($('chart-ttft'), span, [{ label: 'p50', data: q('ttft', 0.5) }, { label: 'p95', data: q('ttft', 0.95) }]);
  lineChart($('chart-itl'), span, [{ label: 'p50', data: q('itl', 0.5) }, { label: 'p95', data: q('itl', 0.95) }]);
  lineChart($('chart-cache'), span, [{
    label: 'hit rate',
    data: windowed(30000, (a, b) => (b.prompt > a.prompt ? (b.cached - a.cached) / (b.prompt - a.prompt) : NaN)),
  }], { max: 1, percent: true });
}

function tiles() {
  const last = points[points.length - 1];
  const tenAgo = ago(10000, last.t);
  const minuteAgo = ago(60000, last.t);
  const tps = tenAgo === last ? 0 : Math.max(0, last.generated - tenAgo.generated) / ((last.t - tenAgo.t) / 1000);
  $('tile-tps').textContent = tps.toFixed(1);
  $('tile-tps').dataset.value = String(tps);
  $('tile-running').textContent = String(last.running);
  $('tile-waiting').textContent = String(last.waiting);
  $('tile-total').textContent = String(last.generated);
  const p50 = quantile(0.5, minuteAgo === last ? [] : minuteAgo.ttft, last.ttft);
  const p95 = quantile(0.95, minuteAgo === last ? [] : minuteAgo.ttft, last.ttft);
  $('tile-ttft').textContent = Number.isNaN(p50) ? '\u2014' : `${formatDuration(p50)} / ${formatDuration(p95)}`;
  const prompt = last.prompt - (minuteAgo === last ? 0 : minuteAgo.prompt);
  const cached = last.cached - (minuteAgo === last ? 0 : minuteAgo.cached);
  $('tile-cache').textContent = prompt > 0 ? `${Math.round((100 * cached) / prompt)}%` : '\u2014';
}

function errorsTable() {
  const last = points[points.length - 1];
  const first = points[0];
  const rows = Object.entries(last.errors).sort((a, b) => b[1] - a[1]);
  $('errors').querySelector('tbody').replaceChildren(...rows.map(([code, n]) =>
    el('tr', {}, el('td', {}, code), el('td', {}, String(n)), el('td', {}, String(n - (first.errors[code] || 0))))));
  $('errors-empty').hidden = rows.length > 0;
  $('errors').hidden = rows.length === 0;
}

async function unload(name, button) {
  button.disabled = true;
  try {
    await api('/api/generate', { method: 'POST', body: { model: name, keep_alive: 0 } });
    await poll();
  } catch (e) {
    showBanner(`Cannot unload ${name}: ${e.message}`);
    button.disabled = false;
  }
}

function loadedTable(ps) {
  const models = ps.models || [];
  const now = Date.now();
  $('loaded').querySelector('tbody').replaceChildren(...models.map((m) => {
    const s = m.scheduler || {};
    const left = (Date.parse(m.expires_at) - now) / 1000;
    const unloadButton = el('button', { class: 'small danger', 'aria-label': `Unload ${m.name}` }, 'Unload');
    unloadButton.addEventListener('click', () => unload(m.name, unloadButton));
    return el('tr', { 'data-model': m.name },
      el('td', {}, m.name),
      el('td', {}, m.engine || ''),
      el('td', {}, String(m.context_length || '')),
      el('td', {}, m.size ? formatBytes(m.size) : '\u2014'),
      el('td', { class: 'lanes' }, `${s.active ?? 0} / ${s.parallel ?? 0}`),
      el('td', {}, String(s.waiting ?? 0)),
      el('td', {}, left > 0 ? formatDuration(left) : 'unloading'),
      el('td', {}, unloadButton));
  }));
  $('loaded-empty').hidden = models.length > 0;
}

function fleetTable(fleet) {
  const nodes = fleet.nodes || [];
  $('fleet-section').hidden = nodes.length === 0;
  $('fleet').querySelector('tbody').replaceChildren(...nodes.map((n) => el('tr', {},
    el('td', {}, n.url),
    el('td', { class: n.healthy ? 'ok' : 'error' }, n.healthy ? 'healthy' : `down${n.error ? `: ${n.error}` : ''}`),
    el('td', {}, (n.models || []).join(', ') || '\u2014'),
    el('td', {}, n.checked_secs_ago == null ? 'not yet' : `${formatDuration(n.checked_secs_ago)} ago`))));
}

async function poll() {
  try {
    // A request that hangs must not stop the polling: each poll gives up after ten seconds.
    const signal = AbortSignal.timeout(POLL_TIMEOUT_MS);
    const [ps, metrics, fleet] = await Promise.all([
      api('/api/ps', { signal }), api('/metrics', { text: true, signal }), api('/api/fleet', { signal }),
    ]);
    const t = Date.now();
    points.push({ t, ...digest(parseMetrics(metrics)) });
    while (points.length > 2 && points[0].t < t - KEEP_MS) points.shift();
    loadedTable(ps);
    fleetTable(fleet);
    tiles();
    errorsTable();
    draw();
    showBanner('');
    document.body.dataset.polled = String(points.length);
  } catch (e) {
    showBanner(`Cannot reach the server: ${e.message}`);
  }
}

async function init() {
  try {
    const v = await api('/api/version');
    $('server').textContent = `version ${v.version}`;
  } catch (_) { /* shown by the first poll */ }
  const loop = async () => {
    await poll();
    setTimeout(loop, POLL_MS);
  };
  loop();
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', draw);
}

init();
