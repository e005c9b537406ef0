// Markdown to DOM nodes, safe by construction: every piece of model output becomes a text
// node or an element this file creates by name (never innerHTML), so `<script>` or
// `<img onerror=...>` in an answer is shown as text. Links keep only http(s) and mailto
// targets. Covers what chat models write: headings, paragraphs, fenced code (with a copy
// button), lists, quotes, tables, rules, emphasis, inline code, links, and TeX math (shown as
// source in a math style: no math engine is shipped). An unclosed code fence while an
// answer streams is shown as code so far.

import { el } from './api.js';

const SAFE_URL = /^(https?:\/\/|mailto:)/i;

/** A link to `href` showing `children`, or `raw` as text when the target is not safe. */
function link(children, href, raw) {
  if (!SAFE_URL.test(href)) return [raw];
  return [el('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, ...children)];
}

const INLINE = [
  [/`([^`\n]+)`/y, (m) => [el('code', {}, m[1])]],
  [/\*\*(?=\S)([\s\S]*?\S)\*\*/y, (m) => [el('strong', {}, ...inline(m[1]))]],
  [/__(?=\S)([\s\S]*?\S)__(?!\w)/y, (m) => [el('strong', {}, ...inline(m[1]))]],
  [/~~(?=\S)([\s\S]*?\S)~~/y, (m) => [el('del', {}, ...inline(m[1]))]],
  [/\*(?=[^\s*])([^*\n]*?[^\s*])\*/y, (m) => [el('em', {}, ...inline(m[1]))]],
  [/_(?=[^\s_])([^_\n]*?[^\s_])_(?!\w)/y, (m) => [el('em', {}, ...inline(m[1]))]],
  [/\[([^\]\n]+)\]\(([^)\s]+)\)/y, (m) => link(inline(m[1]), m[2], m[0])],
  [/\\\((.+?)\\\)/y, (m) => [el('span', { class: 'math' }, m[1])]],
  [/\$(?=[^\s$])([^$\n]*?[^\s$])\$(?!\d)/y, (m) => [el('span', { class: 'math' }, m[1])]],
  [/https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_]/y, (m) => link([m[0]], m[0], m[0])],
];
const TRIGGERS = new Set(['`', '*', '_', '~', '[', '\\', '$', 'h']);

/** Inline markdown: a list of nodes and strings. */
export function inline(text) {
  const out = [];
  let plain = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    let matched = null;
    if (TRIGGERS.has(c) && !(c === '_' && i > 0 && /\w/.test(text[i - 1]))) {
      for (const [re, make] of INLINE) {
        re.lastIndex = i;
        const m = re.exec(text);
        if (m) { matched = [m, make]; break; }
      }
    }
    if (matched) {
      if (plain) { out.push(plain); plain = ''; }
      out.push(...matched[1](matched[0]));
      i += matched[0][0].length;
    } else {
      plain += c;
      i += 1;
    }
  }
  if (plain) out.push(plain);
  return out;
}

function copyButton(getText) {
  const button = el('button', { type: 'button', class: 'copy', 'aria-label': 'Copy code' }, 'Copy');
  button.addEventListener('click', async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = el('textarea', {}, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  });
  return button;
}

function codeBlock(lang, code) {
  const codeEl = el('code', lang ? { 'data-lang': lang } : {}, code);
  return el('div', { class: 'code-block' },
    el('div', { class: 'code-head' }, el('span', {}, lang || 'code'), copyButton(() => codeEl.textContent)),
    el('pre', {}, codeEl));
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
/** A table's delimiter row: pipes, hyphens and alignment colons only (`|---|:-:|`). */
const isTableSep = (line) => line.includes('|') && line.includes('-') && /^[\s|:-]+$/.test(line);

function cells(row) {
  let r = row.trim();
  if (r.startsWith('|')) r = r.slice(1);
  if (r.endsWith('|')) r = r.slice(0, -1);
  return r.split('|').map((c) => c.trim());
}

function isBlockStart(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || BULLET.test(line) || NUMBERED.test(line) || line.trim() === '$$'
    || (line.includes('|') && next !== undefined && isTableSep(next));
}

function list(lines, i, ordered) {
  const re = ordered ? NUMBERED : BULLET;
  const first = re.exec(lines[i]);
  const indent = first[1].length;
  const depth = (line) => line.match(/^\s*/)[0].length;
  const items = [];
  while (i < lines.length) {
    const line = lines[i];
    const m = re.exec(line);
    if (m && m[1].length === indent) {
      items.push([m[3]]);
    } else if (line.trim() && items.length && depth(line) > indent) {
      items[items.length - 1].push(line.slice(Math.min(depth(line), indent + 2)));
    } else if (!line.trim() && items.length && i + 1 < lines.length && depth(lines[i + 1]) > indent
               && lines[i + 1].trim()) {
      items[items.length - 1].push('');
    } else {
      break;
    }
    i += 1;
  }
  const attrs = ordered && first[2] !== '1' ? { start: first[2] } : {};
  const listEl = el(ordered ? 'ol' : 'ul', attrs,
    items.map((body) => el('li', {}, ...(body.length === 1 ? inline(body[0]) : blocks(body)))));
  return [listEl, i];
}

/** Block markdown: a list of nodes. */
function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) { body.push(lines[i]); i += 1; }
      i += 1;
      out.push(codeBlock(m[2], body.join('\n')));
    } else if (line.trim() === '$$') {
      const body = [];
      i += 1;
      while (i < lines.length && lines[i].trim() !== '$$') { body.push(lines[i]); i += 1; }
      i += 1;
      out.push(el('div', { class: 'math block' }, body.join('\n')));
    } else if ((m = HEADING.exec(line))) {
      out.push(el(`h${Math.min(6, m[1].length + 2)}`, {}, ...inline(m[2])));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(el('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i += 1; }
      out.push(el('blockquote', {}, ...blocks(body)));
    } else if (BULLET.test(line)) {
      const [node, next] = list(lines, i, false);
      out.push(node);
      i = next;
    } else if (NUMBERED.test(line)) {
      const [node, next] = list(lines, i, true);
      out.push(node);
      i = next;
    } else if (line.includes('|') && i + 1 < lines.length && isTableSep(lines[i + 1])) {
      const head = cells(line);
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].includes('|') && lines[i].trim()) { rows.push(cells(lines[i])); i += 1; }
      out.push(el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, head.map((c) => el('th', {}, ...inline(c))))),
        el('tbody', {}, rows.map((r) => el('tr', {}, head.map((_, j) => el('td', {}, ...inline(r[j] || '')))))))));
    } else {
      const para = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() && !isBlockStart(lines[i], lines[i + 1])) { para.push(lines[i]); i += 1; }
      const parts = [];
      para.forEach((p, j) => {
        if (j > 0) parts.push(el('br'));
        parts.push(...inline(p));
      });
      out.push(el('p', {}, ...parts));
    }
  }
  return out;
}

/** Renders `text` as markdown into a fragment. */
export function render(text) {
  const frag = document.createDocumentFragment();
  frag.append(...blocks(String(text).replace(/\r\n?/g, '\n').split('\n')));
  return frag;
}
