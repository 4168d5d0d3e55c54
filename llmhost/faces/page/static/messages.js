// One message on screen: a user's text (with Edit), or a model's answer (thinking apart and collapsible,
// the answer as Markdown, its speed, Copy and Regenerate). Text goes in as text, never as HTML.

import { copyText, renderMarkdown } from "./markdown.js";

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

export function button(label, className, onClick) {
  const b = el("button", className);
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

/** A user message's article; `onEdit(article)` when its Edit button is clicked. */
export function userView(message, { onEdit }) {
  const article = el("article", "message user");
  const role = el("div", "role");
  role.textContent = "You";
  const text = el("div", "content user-text");
  text.textContent = message.content;
  const actions = el("div", "actions");
  actions.append(button("Edit", "edit", () => onEdit(article)));
  article.append(role, text, actions);
  return article;
}

/** An answer's view (its parts, for `paintReply`); Regenerate only when `onRegenerate` is given. */
export function replyView(reply, { onRegenerate, isRunning }) {
  const article = el("article", "message assistant");
  const role = el("div", "role");
  role.textContent = reply.model || "Model";
  const thinking = el("details", "thinking");
  const summary = el("summary");
  const thinkingText = el("div", "thinking-text");
  thinking.append(summary, thinkingText);
  const content = el("div", "content markdown");
  const meta = el("div", "meta");
  const actions = el("div", "actions");
  actions.append(button("Copy", "copy", (event) => copyText(reply.content, event.currentTarget)));
  if (onRegenerate) actions.append(button("Regenerate", "regenerate", onRegenerate));
  article.append(role, thinking, content, meta, actions);
  const view = { article, thinking, summary, thinkingText, content, meta, actions, hasOpened: false, hasClosed: false };
  paintReply(view, reply, isRunning);
  return view;
}

/** Brings an answer's view up to date with `reply` (called for every painted frame while it streams). */
export function paintReply(view, reply, isRunning) {
  const isThinking = isRunning && !reply.content && Boolean(reply.thinking);
  view.thinking.hidden = !reply.thinking;
  view.summary.textContent = isThinking ? "Thinking…" : "Thinking";
  view.thinkingText.textContent = reply.thinking ?? "";
  // Open while the model thinks, closed once the answer starts (a click opens it again).
  if (isThinking && !view.hasOpened) view.thinking.open = view.hasOpened = true;
  if (view.hasOpened && !view.hasClosed && reply.content) {
    view.thinking.open = false;
    view.hasClosed = true;
  }
  view.content.replaceChildren(renderMarkdown(reply.content ?? ""));
  view.article.classList.toggle("streaming", isRunning);
  view.actions.hidden = isRunning;

  view.meta.replaceChildren();
  const parts = [];
  if (reply.stats) parts.push(statsText(reply.stats));
  if (reply.stopped) parts.push("stopped");
  else if (reply.finishReason === "length") parts.push("cut at the token limit");
  if (parts.length) {
    const stats = el("span", "stats");
    stats.textContent = parts.join(" · ");
    view.meta.append(stats);
  }
  if (reply.error) {
    const error = el("span", "error");
    error.textContent = reply.error;
    view.meta.append(error);
  }
}

export function statsText({ ttftMs, numTokens, tokensPerSecond, isEstimate }) {
  const parts = [];
  if (ttftMs != null) parts.push(`TTFT ${ttftMs < 1000 ? `${Math.round(ttftMs)} ms` : `${(ttftMs / 1000).toFixed(2)} s`}`);
  if (tokensPerSecond != null) parts.push(`${tokensPerSecond.toFixed(1)} tok/s`);
  if (numTokens != null) parts.push(`${isEstimate ? "~" : ""}${numTokens} tokens`);
  return parts.join(" · ");
}

/** Turns a user message's article into an editor: `onSend(text)` with the new text, or `onCancel()`. */
export function openEditor(article, text, { onSend, onCancel }) {
  const editor = el("div", "editor");
  const area = el("textarea");
  area.value = text;
  area.rows = Math.min(12, text.split("\n").length + 1);
  const row = el("div", "row end");
  const resend = button("Send", "primary resend", () => area.value.trim() && onSend(area.value.trim()));
  row.append(button("Cancel", "cancel-edit", onCancel), resend);
  editor.append(area, row);
  article.querySelector(".content").replaceWith(editor);
  article.querySelector(".actions").hidden = true;
  area.focus();
}
