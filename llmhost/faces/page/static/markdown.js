// Markdown to DOM nodes, for model output, which is untrusted.
//
// No string is ever parsed as HTML: every piece of text becomes a Text node, and elements are made with
// document.createElement, so `<img onerror=…>` in an answer shows as those characters. Links keep only
// http(s) and mailto addresses; images are shown as links (the page loads nothing from elsewhere).
//
// The subset chat models write: paragraphs (single newlines kept), # headings, fenced code blocks (an
// unclosed fence runs to the end, as it does mid-stream), indented code, lists (nested by indent),
// > quotes, tables, rules; inline `code`, **bold**, *italic*, ~~strike~~, [links](…), bare URLs and
// backslash escapes.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])(?: +(.*))?$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;
const INDENTED = /^(?: {4}|\t)/;
const MAX_DEPTH = 16; // quotes and lists nested deeper are shown as text (a page must not overflow its stack)

/** A DocumentFragment holding `source` rendered. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  renderBlocks(source.replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function renderBlocks(lines, parent, depth = 0) {
  if (depth > MAX_DEPTH) {
    const text = el("p", "plain-text");
    text.textContent = lines.join("\n");
    parent.append(text);
    return;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !isClosingFence(lines[i], fence)) body.push(lines[i++]);
      i += 1; // the closing fence (or past the end)
      parent.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      const heading = el(`h${m[1].length}`);
      renderInline(m[2], heading);
      parent.append(heading);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i += 1;
      }
      const quote = el("blockquote");
      renderBlocks(body, quote, depth + 1);
      parent.append(quote);
    } else if (LIST_ITEM.test(line)) {
      i = renderList(lines, i, parent, depth);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
      i = renderTable(lines, i, parent);
    } else if (INDENTED.test(line)) {
      const body = [];
      while (i < lines.length && (INDENTED.test(lines[i]) || !lines[i].trim())) {
        body.push(lines[i].replace(INDENTED, ""));
        i += 1;
      }
      parent.append(codeBlock(body.join("\n").replace(/\n+$/, ""), ""));
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) body.push(lines[i++]);
      if (!body.length) body.push(lines[i++]); // a line no block takes: keep it as text
      const paragraph = el("p");
      body.forEach((text, n) => {
        if (n) paragraph.append(el("br"));
        renderInline(text.trim(), paragraph);
      });
      parent.append(paragraph);
    }
  }
}

function startsBlock(lines, i) {
  const line = lines[i];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]))
  );
}

function isClosingFence(line, fence) {
  const trimmed = line.trim();
  return trimmed.length >= fence.length && trimmed === fence[0].repeat(trimmed.length);
}

function codeBlock(text, language) {
  const block = el("div", "code-block");
  const bar = el("div", "code-bar");
  const label = el("span", "code-lang");
  label.textContent = language || "code";
  const copy = el("button", "copy-code");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => copyText(text, copy));
  bar.append(label, copy);
  const pre = el("pre");
  const code = el("code");
  code.textContent = text;
  pre.append(code);
  block.append(bar, pre);
  return block;
}

/** Copies `text`, and says so on `button` for a moment. */
export function copyText(text, button) {
  const done = (label) => {
    const before = button.textContent;
    button.textContent = label;
    setTimeout(() => (button.textContent = before), 1200);
  };
  navigator.clipboard?.writeText(text).then(
    () => done("Copied"),
    () => done("Copy failed"),
  );
}

function renderList(lines, start, parent, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const isOrdered = /\d/.test(first[2]);
  const list = el(isOrdered ? "ol" : "ul");
  if (isOrdered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== isOrdered) break;
    const contentIndent = indent + m[2].length + 1;
    const body = [m[3] || ""];
    i += 1;
    // The item goes on over lines indented past its marker (a nested list, a continued paragraph) and
    // over blank lines followed by such a line.
    while (i < lines.length) {
      const next = lines[i];
      if (next.trim() && leading(next) > indent) {
        body.push(next.slice(Math.min(leading(next), contentIndent)));
      } else if (!next.trim() && i + 1 < lines.length && leading(lines[i + 1]) > indent && lines[i + 1].trim()) {
        body.push("");
      } else {
        break;
      }
      i += 1;
    }
    const item = el("li");
    if (body.length === 1) renderInline(body[0], item);
    else renderBlocks(body, item, depth + 1);
    list.append(item);
    // Blank lines between two items of this list ("loose" lists).
    while (i + 1 < lines.length && !lines[i].trim() && isSibling(lines[i + 1], indent)) i += 1;
  }
  parent.append(list);
  return i;
}

function leading(line) {
  return line.length - line.trimStart().length;
}

function isSibling(line, indent) {
  const m = LIST_ITEM.exec(line);
  return Boolean(m) && m[1].length === indent;
}

function renderTable(lines, start, parent) {
  const row = (line, cellTag) => {
    const tr = el("tr");
    for (const text of line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|")) {
      const cell = el(cellTag);
      renderInline(text.trim(), cell);
      tr.append(cell);
    }
    return tr;
  };
  const head = el("thead");
  head.append(row(lines[start], "th"));
  const body = el("tbody");
  let i = start + 2; // past the header and its |---| line
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) body.append(row(lines[i++], "td"));
  const table = el("table");
  table.append(head, body);
  const wrap = el("div", "table-wrap"); // scrolls sideways on a phone instead of widening the page
  wrap.append(table);
  parent.append(wrap);
  return i;
}

// One pass over a line: the earliest match wins, the text before it stays text. Groups:
// 1-2 code span, 3 bold, 4 bold (__), 5 strike, 6 italic, 7 italic (_), 8-9 link or image, 10 bare URL,
// 11 escaped character.
const INLINE = new RegExp(
  [
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/,
    /\*\*(?=\S)([\s\S]*?\S)\*\*(?!\*)/,
    /(?<![\w\\])__(?=\S)([\s\S]*?\S)__(?!\w)/,
    /~~(?=\S)([\s\S]*?\S)~~/,
    /\*(?=[^\s*])([\s\S]*?[^\s*\\])\*/,
    /(?<![\w\\])_(?=[^\s_])([\s\S]*?[^\s_\\])_(?!\w)/,
    /!?\[([^\]\n]+)\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"]*")?\s*\)/,
    /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_~])/,
    /\\([\\`*_{}[\]()#+\-.!~|>])/,
  ]
    .map((part) => part.source)
    .join("|"),
  "g",
);

function renderInline(text, parent, isInLink = false) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) {
      const code = el("code");
      code.textContent = m[2].length > 2 && m[2].startsWith(" ") && m[2].endsWith(" ") ? m[2].slice(1, -1) : m[2];
      parent.append(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      parent.append(wrapInline("strong", m[3] ?? m[4], isInLink));
    } else if (m[5] !== undefined) {
      parent.append(wrapInline("del", m[5], isInLink));
    } else if (m[6] !== undefined || m[7] !== undefined) {
      parent.append(wrapInline("em", m[6] ?? m[7], isInLink));
    } else if (isInLink && (m[8] !== undefined || m[10] !== undefined)) {
      parent.append(m[0]); // no link inside a link
    } else if (m[8] !== undefined) {
      parent.append(link(m[8], m[9], m[0].startsWith("!")));
    } else if (m[10] !== undefined) {
      parent.append(link(m[10], m[10], false));
    } else {
      parent.append(m[11]);
    }
  }
  if (last < text.length) parent.append(text.slice(last));
}

function wrapInline(tag, inner, isInLink) {
  const node = el(tag);
  renderInline(inner, node, isInLink);
  return node;
}

function link(label, address, isImage) {
  const url = safeUrl(address);
  if (!url) return `${isImage ? "!" : ""}[${label}](${address})`; // shown as written, never followed
  const a = el("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  if (isImage) a.append(`image: ${label}`);
  else renderInline(label, a, true);
  return a;
}

/** The absolute address when it is http(s) or mailto, else null (javascript:, data:…). */
export function safeUrl(address) {
  try {
    const url = new URL(address, document.baseURI);
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}
