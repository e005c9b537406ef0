// The chat page: a client of the server's public Ollama API (/api/tags, /api/show, /api/chat,
// /api/pull). Conversations live in this browser's localStorage.

import { api, ndjson, el, formatBytes, formatDuration, showBanner } from './api.js';
import { render } from './markdown.js';

const STORE = 'hyperllama.conversations';
const DEFAULTS = 'hyperllama.defaults';
const OPTION_FIELDS = ['temperature', 'top_p', 'top_k', 'num_predict', 'seed'];
const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

const $ = (id) => document.getElementById(id);
const state = {
  conversations: [],
  current: null,
  models: [],
  capabilities: {},
  streaming: null,
};

// ---- storage -------------------------------------------------------------------------------

function newId() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).toString();
}

function load() {
  try {
    const list = JSON.parse(localStorage.getItem(STORE) || '[]');
    state.conversations = Array.isArray(list) ? list.map(clean).filter(Boolean) : [];
  } catch (_) {
    state.conversations = [];
  }
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(state.conversations));
  } catch (e) {
    showBanner(`Could not save conversations in this browser: ${e.message}`);
  }
}

function defaults() {
  try { return JSON.parse(localStorage.getItem(DEFAULTS) || '{}') || {}; } catch (_) { return {}; }
}

/** A conversation as stored, from anything (an import, old storage); null if unusable. */
function clean(raw) {
  if (!raw || typeof raw !== 'object' || !Array.isArray(raw.messages)) return null;
  const str = (v) => (typeof v === 'string' ? v : '');
  const messages = raw.messages
    .filter((m) => m && ROLES.has(m.role) && typeof m.content === 'string')
    .map((m) => {
      const out = { role: m.role, content: m.content };
      if (typeof m.thinking === 'string' && m.thinking) out.thinking = m.thinking;
      if (Array.isArray(m.tool_calls)) out.tool_calls = m.tool_calls;
      if (typeof m.model === 'string') out.model = m.model;
      if (m.stats && typeof m.stats === 'object') out.stats = m.stats;
      if (m.stopped === true) out.stopped = true;
      if (typeof m.error === 'string') out.error = m.error;
      return out;
    });
  const options = {};
  for (const f of OPTION_FIELDS) {
    const v = raw.options && raw.options[f];
    if (typeof v === 'number' && Number.isFinite(v)) options[f] = v;
  }
  return {
    id: str(raw.id) || newId(),
    title: str(raw.title) || 'New chat',
    model: str(raw.model),
    system: str(raw.system),
    think: raw.think === true,
    options,
    messages,
    created: Number(raw.created) || Date.now(),
    updated: Number(raw.updated) || Date.now(),
  };
}

function newConversation() {
  const d = defaults();
  const conv = clean({ messages: [], model: $('model').value || d.model || '', options: d.options || {}, system: '', think: !!d.think });
  state.conversations.unshift(conv);
  return conv;
}

// ---- conversation list ---------------------------------------------------------------------

function renderList() {
  const ul = $('conversations');
  ul.replaceChildren();
  const sorted = [...state.conversations].sort((a, b) => b.updated - a.updated);
  for (const conv of sorted) {
    const current = conv === state.current;
    const title = el('button', {
      class: 'title', 'aria-current': current ? 'true' : null, title: conv.title,
      onclick: () => { select(conv); closeSidebar(); },
    }, conv.title);
    const rename = el('button', { class: 'icon-button', 'aria-label': `Rename ${conv.title}`, onclick: () => startRename(li, conv) }, '\u270E');
    const del = el('button', { class: 'icon-button', 'aria-label': `Delete ${conv.title}` }, '\u2715');
    del.addEventListener('click', () => {
      if (del.dataset.confirm) { remove(conv); return; }
      del.dataset.confirm = '1';
      del.textContent = 'Delete?';
      del.classList.add('danger');
      setTimeout(() => { if (del.isConnected) { delete del.dataset.confirm; del.textContent = '\u2715'; del.classList.remove('danger'); } }, 4000);
    });
    const li = el('li', { class: current ? 'current' : '', 'data-id': conv.id }, title, rename, del);
    ul.append(li);
  }
}

function startRename(li, conv) {
  const input = el('input', { class: 'rename', value: conv.title, 'aria-label': 'New title' });
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    if (keep && input.value.trim()) {
      conv.title = input.value.trim().slice(0, 200);
      save();
    }
    renderList();
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') finish(true);
    if (ev.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
}

function remove(conv) {
  if (state.streaming && state.streaming.conv === conv) state.streaming.controller.abort();
  state.conversations = state.conversations.filter((c) => c !== conv);
  save();
  if (state.current === conv) select(state.conversations[0] || newConversation());
  else renderList();
}

function select(conv) {
  state.current = conv;
  if (conv.model && state.models.some((m) => m.name === conv.model)) $('model').value = conv.model;
  $('system').value = conv.system;
  for (const f of OPTION_FIELDS) $(f).value = conv.options[f] ?? '';
  $('think').checked = conv.think;
  renderList();
  renderMessages();
  updateFacts();
}

// ---- messages ------------------------------------------------------------------------------

function statsText(s) {
  if (!s) return '';
  const parts = [];
  if (Number.isFinite(s.eval_count)) parts.push(`${s.eval_count} tokens`);
  if (s.eval_count && s.eval_duration) parts.push(`${(s.eval_count / (s.eval_duration / 1e9)).toFixed(1)} tok/s`);
  if (Number.isFinite(s.ttft_ms)) parts.push(`TTFT ${formatDuration(s.ttft_ms / 1000)}`);
  if (Number.isFinite(s.prompt_eval_count)) {
    parts.push(`${s.prompt_cache_count || 0}/${s.prompt_eval_count} prompt tokens cached`);
  }
  if (s.done_reason === 'length') parts.push('stopped at the token limit');
  return parts.join(' \u00b7 ');
}

function toolCalls(calls) {
  return calls.map((c) => {
    const f = c.function || {};
    let args = f.arguments;
    if (typeof args !== 'string') args = JSON.stringify(args ?? {}, null, 2);
    return el('details', { class: 'tool-call' },
      el('summary', {}, `Tool call: ${f.name || '?'}`),
      el('pre', {}, args));
  });
}

/** The node of message `i` of the current conversation. */
function messageNode(msg, i) {
  const conv = state.current;
  const li = el('li', { class: `message ${msg.role}`, 'data-role': msg.role, 'data-index': i });
  const who = msg.role === 'assistant' ? `Assistant${msg.model ? ` \u00b7 ${msg.model}` : ''}` : msg.role === 'user' ? 'You' : msg.role;
  li.append(el('div', { class: 'who' }, who));
  if (msg.role === 'assistant') {
    if (msg.thinking) {
      const body = el('div', { class: 'thinking-body' }, render(msg.thinking));
      const details = el('details', { class: 'thinking', open: !msg.content }, el('summary', {}, 'Thinking'), body);
      details.querySelector('summary').addEventListener('click', () => { details.dataset.touched = '1'; });
      li.append(details);
    }
    li.append(el('div', { class: 'content markdown' }, render(msg.content)));
    if (msg.tool_calls && msg.tool_calls.length) li.append(el('div', { class: 'tool-calls' }, toolCalls(msg.tool_calls)));
    if (msg.error) li.append(el('p', { class: 'error', role: 'alert' }, msg.error));
    const meta = el('div', { class: 'meta' });
    if (msg.stopped) meta.append(el('span', { class: 'badge' }, 'stopped'));
    meta.append(el('span', { class: 'stats' }, statsText(msg.stats)));
    const streaming = state.streaming && state.streaming.msg === msg;
    if (!streaming) {
      meta.append(el('button', { class: 'small', onclick: () => copyText(msg.content) }, 'Copy'));
      if (i === conv.messages.length - 1) {
        meta.append(el('button', { class: 'small regenerate', onclick: regenerate }, 'Regenerate'));
      }
    }
    li.append(meta);
    if (streaming) li.dataset.streaming = 'true';
  } else {
    li.append(el('div', { class: 'content plain' }, msg.content));
    if (msg.role === 'user' && !state.streaming) {
      li.append(el('div', { class: 'meta' }, el('button', { class: 'small edit', onclick: () => startEdit(li, i) }, 'Edit')));
    }
  }
  return li;
}

function renderMessages() {
  const ol = $('messages');
  const conv = state.current;
  const nodes = [];
  if (conv.system) nodes.push(el('li', { class: 'message system' }, el('div', { class: 'who' }, 'System'), el('div', { class: 'content plain' }, conv.system)));
  conv.messages.forEach((m, i) => nodes.push(messageNode(m, i)));
  if (!conv.messages.length) nodes.push(el('li', { class: 'empty muted' }, 'Pick a model and send a message.'));
  ol.replaceChildren(...nodes);
  scrollDown();
}

let pending = null;
/** Re-renders the streaming message, at most once per frame. */
function updateStreaming() {
  if (pending) return;
  pending = requestAnimationFrame(() => {
    pending = null;
    const s = state.streaming;
    if (!s || s.conv !== state.current) return;
    const i = s.conv.messages.indexOf(s.msg);
    const ol = $('messages');
    // Follow the answer only while the reader is at the bottom.
    const following = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 80;
    const old = ol.querySelector(`li[data-index="${i}"]`);
    if (old) {
      const fresh = messageNode(s.msg, i);
      // A reasoning block the reader opened or closed stays that way.
      const shown = old.querySelector('details.thinking');
      const now = fresh.querySelector('details.thinking');
      if (shown && now && shown.dataset.touched) { now.open = shown.open; now.dataset.touched = '1'; }
      old.replaceWith(fresh);
    }
    if (following) scrollDown();
  });
}

function scrollDown() {
  const ol = $('messages');
  ol.scrollTop = ol.scrollHeight;
}

async function copyText(text) {
  try { await navigator.clipboard.writeText(text); } catch (_) { /* not allowed here */ }
}

function startEdit(li, i) {
  const conv = state.current;
  const area = el('textarea', { class: 'edit-area', rows: 3, 'aria-label': 'Edit message' }, conv.messages[i].content);
  const saveButton = el('button', { class: 'primary small' }, 'Save & send');
  const cancel = el('button', { class: 'small', onclick: renderMessages }, 'Cancel');
  saveButton.addEventListener('click', () => {
    const text = area.value.trim();
    if (!text) return;
    conv.messages = conv.messages.slice(0, i);
    conv.messages.push({ role: 'user', content: text });
    generate(conv);
  });
  area.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') renderMessages();
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); saveButton.click(); }
  });
  li.querySelector('.content').replaceWith(area);
  li.querySelector('.meta').replaceChildren(saveButton, cancel);
  area.focus();
}

function regenerate() {
  const conv = state.current;
  if (state.streaming) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === 'assistant') conv.messages.pop();
  if (conv.messages.length) generate(conv);
}

// ---- generation ----------------------------------------------------------------------------

function readSettings(conv) {
  conv.system = $('system').value;
  conv.think = $('think').checked && !$('think').disabled;
  conv.options = {};
  for (const f of OPTION_FIELDS) {
    const raw = $(f).value.trim();
    if (raw !== '' && Number.isFinite(Number(raw))) conv.options[f] = Number(raw);
  }
  localStorage.setItem(DEFAULTS, JSON.stringify({ model: conv.model, options: conv.options, think: conv.think }));
}

function history(conv, upTo) {
  const out = [];
  if (conv.system.trim()) out.push({ role: 'system', content: conv.system });
  for (const m of conv.messages.slice(0, upTo)) {
    if (m.error && !m.content) continue;
    const msg = { role: m.role, content: m.content };
    if (m.tool_calls) msg.tool_calls = m.tool_calls;
    out.push(msg);
  }
  return out;
}

function setStreaming(on) {
  $('send').hidden = on;
  $('stop').hidden = !on;
  $('model').disabled = on;
  document.body.classList.toggle('streaming', on);
}

async function generate(conv) {
  if (state.streaming) return;
  const model = $('model').value;
  if (!model) { showBanner('No model to chat with: pull or create one first.'); return; }
  conv.model = model;
  readSettings(conv);
  showBanner('');
  const msg = { role: 'assistant', content: '', model };
  conv.messages.push(msg);
  conv.updated = Date.now();
  const controller = new AbortController();
  state.streaming = { controller, conv, msg };
  setStreaming(true);
  save();
  renderList();
  renderMessages();
  const body = { model, messages: history(conv, conv.messages.length - 1), stream: true };
  if (Object.keys(conv.options).length) body.options = conv.options;
  if (conv.think) body.think = true;
  const started = performance.now();
  let first = null;
  try {
    const res = await api('/api/chat', { method: 'POST', body, signal: controller.signal, raw: true });
    for await (const line of ndjson(res)) {
      if (line.error) throw new Error(line.error);
      const m = line.message || {};
      if (first === null && (m.content || m.thinking || m.tool_calls)) first = performance.now();
      if (m.content) msg.content += m.content;
      if (m.thinking) msg.thinking = (msg.thinking || '') + m.thinking;
      if (m.tool_calls && m.tool_calls.length) msg.tool_calls = [...(msg.tool_calls || []), ...m.tool_calls];
      if (line.done) {
        msg.stats = {
          eval_count: line.eval_count, eval_duration: line.eval_duration,
          prompt_eval_count: line.prompt_eval_count, prompt_cache_count: line.prompt_cache_count,
          total_duration: line.total_duration, done_reason: line.done_reason,
          ttft_ms: first === null ? undefined : Math.round(first - started),
        };
      }
      updateStreaming();
    }
  } catch (e) {
    if (e.name === 'AbortError') msg.stopped = true;
    else msg.error = e.message || String(e);
  } finally {
    state.streaming = null;
    setStreaming(false);
    conv.updated = Date.now();
    save();
    if (conv === state.current) renderMessages();
    $('prompt').focus();
  }
}

function stop() {
  if (state.streaming) state.streaming.controller.abort();
}

function submit(ev) {
  ev.preventDefault();
  const text = $('prompt').value.trim();
  if (!text || state.streaming) return;
  const conv = state.current;
  conv.messages.push({ role: 'user', content: text });
  if (conv.title === 'New chat') conv.title = text.replace(/\s+/g, ' ').slice(0, 60);
  $('prompt').value = '';
  generate(conv);
}

// ---- models --------------------------------------------------------------------------------

function modelLabel(m) {
  const d = m.details || {};
  const facts = [d.family, d.parameter_size, d.quantization_level].filter((x) => x && x !== 'unknown');
  if (m.remote_host) facts.push(`on ${m.remote_host}`);
  else if (m.size) facts.push(formatBytes(m.size));
  return facts.length ? `${m.name} (${facts.join(', ')})` : m.name;
}

async function loadModels(prefer) {
  let tags;
  try {
    tags = await api('/api/tags');
  } catch (e) {
    showBanner(`Cannot list models: ${e.message}`);
    return;
  }
  state.models = tags.models || [];
  const select = $('model');
  const keep = prefer || (state.current && state.current.model) || select.value || defaults().model;
  select.replaceChildren(...state.models.map((m) => el('option', { value: m.name }, modelLabel(m))));
  if (!state.models.length) {
    select.append(el('option', { value: '' }, 'No models: pull one'));
  } else if (state.models.some((m) => m.name === keep)) {
    select.value = keep;
  }
  select.dataset.loaded = 'true';
  await updateFacts();
}

async function updateFacts() {
  const name = $('model').value;
  const facts = $('model-facts');
  if (!name) { facts.textContent = ''; return; }
  let caps = state.capabilities[name];
  if (!caps) {
    try {
      const show = await api('/api/show', { method: 'POST', body: { model: name } });
      caps = show.capabilities || [];
      state.capabilities[name] = caps;
    } catch (_) {
      caps = [];
    }
  }
  if ($('model').value !== name) return;
  facts.textContent = caps.length ? caps.join(', ') : '';
  $('think').disabled = !caps.includes('thinking');
}

async function pull(ev) {
  ev.preventDefault();
  const name = $('pull-name').value.trim();
  if (!name) return;
  const bar = $('pull-progress');
  const status = $('pull-status');
  bar.hidden = false;
  bar.removeAttribute('value');
  status.textContent = `Pulling ${name}\u2026`;
  status.classList.remove('error');
  try {
    const res = await api('/api/pull', { method: 'POST', body: { model: name, stream: true }, raw: true });
    for await (const line of ndjson(res)) {
      if (line.error) throw new Error(line.error);
      if (line.total) {
        bar.max = line.total;
        bar.value = line.completed || 0;
        status.textContent = `${line.status}: ${formatBytes(line.completed || 0)} of ${formatBytes(line.total)}`;
      } else {
        status.textContent = line.status || '';
      }
    }
    status.textContent = `Pulled ${name}.`;
    bar.hidden = true;
    state.capabilities = {};
    await loadModels(name);
  } catch (e) {
    status.textContent = `Pull failed: ${e.message}`;
    status.classList.add('error');
    bar.hidden = true;
  }
}

// ---- export and import ---------------------------------------------------------------------

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function fileName(conv, ext) {
  const base = conv.title.replace(/[^\w.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 50) || 'conversation';
  return `${base}.${ext}`;
}

function exportJson() {
  const conv = state.current;
  download(fileName(conv, 'json'), 'application/json',
    JSON.stringify({ format: 'hyperllama.conversation', version: 1, ...conv }, null, 2));
}

function exportAll() {
  download('hyperllama-conversations.json', 'application/json',
    JSON.stringify({ format: 'hyperllama.conversations', version: 1, conversations: state.conversations }, null, 2));
}

function exportMarkdown() {
  const conv = state.current;
  const parts = [`# ${conv.title}`, ''];
  if (conv.model) parts.push(`Model: \`${conv.model}\``, '');
  if (conv.system) parts.push('## System', '', conv.system, '');
  for (const m of conv.messages) {
    parts.push(`## ${m.role === 'user' ? 'User' : m.role === 'assistant' ? 'Assistant' : m.role}`, '');
    if (m.thinking) parts.push('<details><summary>Thinking</summary>', '', m.thinking, '', '</details>', '');
    parts.push(m.content, '');
  }
  download(fileName(conv, 'md'), 'text/markdown', parts.join('\n'));
}

async function importFile() {
  const input = $('import-file');
  const file = input.files && input.files[0];
  input.value = '';
  if (!file) return;
  try {
    const data = JSON.parse(await file.text());
    const list = Array.isArray(data) ? data : Array.isArray(data.conversations) ? data.conversations : [data];
    const imported = list.map(clean).filter(Boolean);
    if (!imported.length) throw new Error('no conversations in it');
    for (const conv of imported) {
      if (state.conversations.some((c) => c.id === conv.id)) conv.id = newId();
      state.conversations.unshift(conv);
    }
    save();
    select(imported[0]);
    showBanner('');
  } catch (e) {
    showBanner(`Cannot import ${file.name}: ${e.message}`);
  }
}

// ---- layout --------------------------------------------------------------------------------

function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('toggle-sidebar').setAttribute('aria-expanded', 'false');
}

function init() {
  load();
  $('composer').addEventListener('submit', submit);
  $('stop').addEventListener('click', stop);
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.streaming) stop();
  });
  $('new-chat').addEventListener('click', () => {
    const empty = state.conversations.find((c) => !c.messages.length);
    select(empty || newConversation());
    closeSidebar();
    $('prompt').focus();
  });
  $('model').addEventListener('change', () => {
    if (state.current && !state.streaming) state.current.model = $('model').value;
    updateFacts();
  });
  for (const id of ['system', 'think', ...OPTION_FIELDS]) {
    $(id).addEventListener('change', () => { readSettings(state.current); save(); if (id === 'system') renderMessages(); });
  }
  $('export-json').addEventListener('click', exportJson);
  $('export-md').addEventListener('click', exportMarkdown);
  $('export-all').addEventListener('click', exportAll);
  $('import-file').addEventListener('change', importFile);
  $('pull-form').addEventListener('submit', pull);
  $('toggle-sidebar').addEventListener('click', () => {
    const open = $('sidebar').classList.toggle('open');
    $('toggle-sidebar').setAttribute('aria-expanded', String(open));
  });
  const recent = [...state.conversations].sort((a, b) => b.updated - a.updated)[0];
  select(recent || newConversation());
  loadModels();
  $('prompt').focus();
}

init();
