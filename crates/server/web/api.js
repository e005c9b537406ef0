// The UI's one way to the server: its public HTTP API, with the browser session's API key.
// A 401 opens the key dialog and retries with the key the person types; the key lives in
// sessionStorage, so it is gone when the browser session ends.

const KEY_ITEM = 'hyperllama.apiKey';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || '';
}

function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

/** The message of an error response in any of the server's dialects. */
async function errorMessage(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    const e = body.error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
  } catch (_) { /* not JSON */ }
  return text || `${res.status} ${res.statusText}`;
}

let asking = null;

/** The key dialog, made the first time a request needs a key. */
function keyDialog() {
  let dialog = document.getElementById('key-dialog');
  if (dialog) return dialog;
  dialog = el('dialog', { id: 'key-dialog' },
    el('form', { method: 'dialog', id: 'key-form' },
      el('h2', {}, 'API key'),
      el('p', {}, 'This server needs an API key.'),
      el('label', { for: 'key-input' }, 'Key (kept for this browser session only)'),
      el('input', { id: 'key-input', type: 'password', autocomplete: 'off', required: true }),
      el('p', { id: 'key-error', class: 'error', role: 'alert' }),
      el('div', { class: 'dialog-actions' }, el('button', { type: 'submit', class: 'primary' }, 'Use key'))));
  document.body.append(dialog);
  return dialog;
}

/** Shows the key dialog (once, however many requests are waiting) and resolves with the key. */
function askForKey(reason) {
  if (asking) return asking;
  const dialog = keyDialog();
  const input = document.getElementById('key-input');
  const error = document.getElementById('key-error');
  error.textContent = reason || '';
  input.value = '';
  asking = new Promise((resolve) => {
    const form = document.getElementById('key-form');
    const done = (ev) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      form.removeEventListener('submit', done);
      dialog.close();
      asking = null;
      setApiKey(key);
      resolve(key);
    };
    form.addEventListener('submit', done);
    dialog.addEventListener('cancel', (ev) => ev.preventDefault(), { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/**
 * A request to the server. `body` is sent as JSON; the response is returned when `raw`, else
 * parsed as JSON (or as text for `text: true`). Non-2xx responses throw `ApiError` with the
 * server's own message; a 401 asks for a key and tries again.
 */
export async function api(path, { method = 'GET', body, signal, raw = false, text = false } = {}) {
  for (;;) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const res = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) {
      const message = await errorMessage(res);
      setApiKey('');
      await askForKey(key ? `${message}: try another key.` : '');
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    if (raw) return res;
    return text ? res.text() : res.json();
  }
}

/** The objects of an NDJSON response body, as they arrive. */
export async function* ndjson(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) yield JSON.parse(line);
    }
  }
  buffered += decoder.decode();
  if (buffered.trim()) yield JSON.parse(buffered);
}

/** An element with attributes (never HTML) and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return node;
}

export function formatBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '\u2014';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400 * 365) return `${Math.round(seconds / 3600)} h`;
  return 'forever';
}

export function showBanner(message) {
  const banner = document.getElementById('banner');
  banner.textContent = message || '';
  banner.hidden = !message;
}
