// The chat page: conversations, the composer, settings, and one streaming answer at a time.
//
// Everything the model or the user wrote reaches the DOM as text (textContent, Text nodes, or
// renderMarkdown, which builds elements and never parses HTML).

import { button, openEditor, paintReply, replyView, userView } from "./messages.js";
import * as store from "./store.js";
import { HttpError, request, splitThinking, streamChat } from "./stream.js";

const $ = (id) => document.getElementById(id);
const ui = {
  sidebar: $("sidebar"),
  settingsPanel: $("settings"),
  conversations: $("conversations"),
  messages: $("messages"),
  emptyHint: $("empty-hint"),
  modelStatus: $("model-status"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  systemPrompt: $("system-prompt"),
  temperature: $("temperature"),
  topP: $("top-p"),
  maxTokens: $("max-tokens"),
  template: $("template"),
  templateVars: $("template-vars"),
  apiKey: $("api-key"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyError: $("key-error"),
};

const state = {
  ...store.loadConversations(), // conversations, activeId
  settings: store.loadSettings(),
  apiKey: store.loadApiKey(),
  model: null, // the served model name requests carry (from GET v1/models)
  templates: [], // GET prompt_templates
  running: null, // {controller, conversation, reply, view}: the answer being streamed
  afterKey: null, // what to do again once the user has given an API key
};

// -- conversations -----------------------------------------------------------------------------------
function activeConversation() {
  return state.conversations.find((c) => c.id === state.activeId) ?? null;
}

function persist() {
  store.saveConversations(state.conversations, state.activeId);
}

function startConversation() {
  const conversation = { id: store.newId(), title: "", createdAt: Date.now(), messages: [] };
  state.conversations.unshift(conversation);
  state.activeId = conversation.id;
  return conversation;
}

function titleOf(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line;
}

function selectConversation(id) {
  state.activeId = id;
  persist();
  showPanel("show-sidebar", false);
  render();
}

function deleteConversation(id) {
  if (state.running?.conversation.id === id) state.running.controller.abort();
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.activeId === id) state.activeId = state.conversations[0]?.id ?? null;
  persist();
  render();
}

function renderConversationList() {
  ui.conversations.replaceChildren();
  for (const conversation of state.conversations) {
    const title = conversation.title || "New chat";
    const item = document.createElement("li");
    item.className = "conversation";
    item.classList.toggle("active", conversation.id === state.activeId);
    const open = button(title, "open-conversation", () => selectConversation(conversation.id));
    open.title = title;
    const remove = button("✕", "delete-conversation icon", () => deleteConversation(conversation.id));
    remove.title = "Delete this conversation";
    remove.setAttribute("aria-label", `Delete ${title}`);
    item.append(open, remove);
    ui.conversations.append(item);
  }
}

// -- messages ----------------------------------------------------------------------------------------
function render() {
  renderConversationList();
  renderMessages();
  setBusy(Boolean(state.running));
}

function renderMessages() {
  const conversation = activeConversation();
  const messages = conversation?.messages ?? [];
  ui.messages.replaceChildren(ui.emptyHint);
  ui.emptyHint.hidden = messages.length > 0;
  if (state.running) state.running.view = null;
  messages.forEach((message, index) => ui.messages.append(messageView(conversation, message, index)));
  scrollToEnd(true);
}

function messageView(conversation, message, index) {
  if (message.role === "user") {
    return userView(message, { onEdit: (article) => editMessage(conversation, index, article) });
  }
  const isRunning = state.running?.reply === message;
  const isLast = index === conversation.messages.length - 1;
  const view = replyView(message, { isRunning, onRegenerate: isLast ? () => regenerate(conversation) : null });
  if (isRunning) state.running.view = view;
  return view.article;
}

function scrollToEnd(force) {
  const box = ui.messages;
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

function editMessage(conversation, index, article) {
  if (state.running) return;
  const message = conversation.messages[index];
  openEditor(article, message.content, {
    onCancel: renderMessages,
    onSend(text) {
      message.content = text;
      conversation.messages.length = index + 1; // the answers after it answered the old text
      if (index === 0) conversation.title = titleOf(text);
      generate(conversation);
    },
  });
}

// -- generation --------------------------------------------------------------------------------------
function send(text) {
  if (state.running || !text.trim()) return;
  const conversation = activeConversation() ?? startConversation();
  conversation.messages.push({ role: "user", content: text });
  if (!conversation.title) conversation.title = titleOf(text);
  ui.prompt.value = "";
  generate(conversation);
}

function regenerate(conversation) {
  if (state.running) return;
  while (conversation.messages.at(-1)?.role === "assistant") conversation.messages.pop();
  if (conversation.messages.length) generate(conversation);
}

function chatBody(messages) {
  const s = state.settings;
  const wire = [];
  if (s.systemPrompt.trim()) wire.push({ role: "system", content: s.systemPrompt });
  for (const m of messages) {
    if (m.role === "assistant" && !m.content) continue; // failed or stopped before its first word
    wire.push({ role: m.role, content: m.content });
  }
  const body = { model: state.model ?? "default", messages: wire };
  if (Number.isFinite(s.temperature)) body.temperature = s.temperature;
  if (Number.isFinite(s.topP)) body.top_p = s.topP;
  if (Number.isFinite(s.maxTokens) && s.maxTokens > 0) body.max_tokens = s.maxTokens;
  const template = state.templates.find((t) => t.name === s.template);
  if (template) {
    body.prompt_template = template.name;
    const vars = {};
    for (const { name } of template.variables) {
      const value = s.templateVars[name];
      if (value?.trim()) vars[name] = value;
    }
    if (Object.keys(vars).length) body.template_vars = vars;
  }
  return body;
}

async function generate(conversation) {
  const body = chatBody(conversation.messages);
  const reply = { role: "assistant", content: "", thinking: "", model: state.model, stats: null };
  conversation.messages.push(reply);
  const controller = new AbortController();
  state.running = { controller, conversation, reply, view: null };
  persist();
  render();
  if (state.model === null) await loadServerInfo(); // the server was not up, or wanted a key, at start
  body.model = reply.model = state.model ?? "default";

  const started = performance.now();
  let raw = ""; // the content as sent, `<think>` blocks included
  let reasoning = ""; // reasoning_content, from a server with --reasoning-parser
  let firstAt = null;
  let lastAt = null;
  let numDeltas = 0;
  let usage = null;
  let painting = false;
  const paint = () => {
    if (painting) return;
    painting = true;
    requestAnimationFrame(() => {
      painting = false;
      if (!state.running?.view) return;
      paintReply(state.running.view, reply, true);
      scrollToEnd(false);
    });
  };
  try {
    const result = await streamChat("v1/chat/completions", body, {
      apiKey: state.apiKey,
      signal: controller.signal,
      onDelta({ content, reasoning: thought }) {
        const now = performance.now();
        firstAt ??= now;
        lastAt = now;
        numDeltas += 1;
        raw += content;
        reasoning += thought;
        const split = splitThinking(raw);
        reply.thinking = [reasoning.trim(), split.thinking].filter(Boolean).join("\n\n");
        reply.content = split.answer;
        paint();
      },
    });
    usage = result.usage;
    reply.finishReason = result.finishReason;
  } catch (error) {
    if (error.name === "AbortError") {
      reply.stopped = true;
    } else if (error instanceof HttpError && error.status === 401) {
      reply.error = "This server needs an API key.";
      state.afterKey = () => regenerate(conversation);
      openKeyDialog(state.apiKey ? "That key was refused." : "");
    } else {
      reply.error = error instanceof HttpError ? `${error.status}: ${error.message}` : error.message;
    }
  } finally {
    if (firstAt !== null) {
      // Speed counts the tokens after the first over the time they took (decode speed, as llama-server's
      // UI shows it). A stopped answer has no usage: the deltas stand in for its tokens.
      const numTokens = usage?.completion_tokens ?? numDeltas;
      const seconds = (lastAt - firstAt) / 1000;
      reply.stats = {
        ttftMs: firstAt - started,
        numTokens,
        tokensPerSecond: numTokens > 1 && seconds > 0 ? (numTokens - 1) / seconds : null,
        isEstimate: !usage,
      };
    }
    state.running = null;
    persist();
    render();
    ui.prompt.focus();
  }
}

function setBusy(isBusy) {
  ui.send.hidden = isBusy;
  ui.stop.hidden = !isBusy;
  document.body.classList.toggle("busy", isBusy);
}

// -- the server: status, model name, templates, API key -----------------------------------------------
async function refreshStatus() {
  try {
    const response = await fetch("health");
    const health = await response.json();
    if (response.ok) {
      ui.modelStatus.textContent = `${health.model} · ${health.engine} · ${health.device}`;
      ui.modelStatus.className = "model-status ok";
      return;
    }
    ui.modelStatus.textContent = health.error ? `not ready: ${health.error}` : `model ${health.status}…`;
  } catch {
    ui.modelStatus.textContent = "server unreachable";
  }
  ui.modelStatus.className = "model-status waiting";
  setTimeout(refreshStatus, 2000);
}

/** The served model's name and the prompt templates; false when the server refused the API key. */
async function loadServerInfo() {
  try {
    const models = await (await request("v1/models", { apiKey: state.apiKey })).json();
    state.model = models.data?.[0]?.id ?? null;
    const { templates } = await (await request("prompt_templates", { apiKey: state.apiKey })).json();
    state.templates = templates;
    renderTemplates();
  } catch (error) {
    if (error instanceof HttpError && error.status === 401) {
      openKeyDialog(state.apiKey ? "That key was refused." : "");
      return false;
    }
    console.warn("llmhost: could not read the server's models and templates", error);
  }
  return true;
}

function openKeyDialog(problem) {
  ui.keyError.textContent = problem;
  ui.keyError.hidden = !problem;
  ui.keyInput.value = state.apiKey;
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

function useApiKey(key) {
  state.apiKey = key.trim();
  store.saveApiKey(state.apiKey);
  ui.apiKey.value = state.apiKey;
}

async function keyGiven() {
  useApiKey(ui.keyInput.value);
  if (!(await loadServerInfo())) return; // refused: the dialog is open again
  const retry = state.afterKey;
  state.afterKey = null;
  retry?.();
}

// -- settings ----------------------------------------------------------------------------------------
function renderTemplates() {
  const chosen = state.settings.template;
  ui.template.replaceChildren(new Option("none", ""));
  for (const t of state.templates) ui.template.append(new Option(t.name, t.name));
  if (chosen && !state.templates.some((t) => t.name === chosen)) ui.template.append(new Option(`${chosen} (not on this server)`, chosen));
  ui.template.value = chosen;
  renderTemplateVars();
}

function renderTemplateVars() {
  ui.templateVars.replaceChildren();
  const template = state.templates.find((t) => t.name === state.settings.template);
  if (!template) return;
  if (template.has_system_prompt) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = "This template brings its own system prompt, which replaces yours.";
    ui.templateVars.append(note);
  }
  for (const { name, is_required: isRequired } of template.variables) {
    const label = document.createElement("label");
    label.append(`${name}${isRequired ? " (required)" : ""}`);
    const area = document.createElement("textarea");
    area.rows = name === "context" || name === "documents" ? 5 : 2;
    area.dataset.variable = name;
    area.value = state.settings.templateVars[name] ?? "";
    area.addEventListener("input", () => {
      state.settings.templateVars = { ...state.settings.templateVars, [name]: area.value };
      store.saveSettings(state.settings);
    });
    label.append(area);
    ui.templateVars.append(label);
  }
}

function numberOrNull(input) {
  const value = input.valueAsNumber;
  return Number.isFinite(value) ? value : null;
}

function bindSettings() {
  const s = state.settings;
  ui.systemPrompt.value = s.systemPrompt;
  ui.temperature.value = s.temperature ?? "";
  ui.topP.value = s.topP ?? "";
  ui.maxTokens.value = s.maxTokens ?? "";
  ui.apiKey.value = state.apiKey;
  const save = () => {
    state.settings = {
      ...state.settings,
      systemPrompt: ui.systemPrompt.value,
      temperature: numberOrNull(ui.temperature),
      topP: numberOrNull(ui.topP),
      maxTokens: numberOrNull(ui.maxTokens),
      template: ui.template.value,
    };
    store.saveSettings(state.settings);
  };
  for (const input of [ui.systemPrompt, ui.temperature, ui.topP, ui.maxTokens]) input.addEventListener("input", save);
  ui.template.addEventListener("change", () => {
    save();
    renderTemplateVars();
  });
  ui.apiKey.addEventListener("change", () => {
    useApiKey(ui.apiKey.value);
    loadServerInfo();
  });
}

// -- wiring ------------------------------------------------------------------------------------------
// The conversation list and the settings slide over the chat on a phone; the ☰ and ⚙ buttons say whether
// theirs is shown.
const PANEL_TOGGLES = { "show-sidebar": $("toggle-sidebar"), "show-settings": $("toggle-settings") };

function showPanel(className, isShown) {
  document.body.classList.toggle(className, isShown);
  PANEL_TOGGLES[className].setAttribute("aria-expanded", String(isShown));
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.prompt.value);
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.prompt.value);
  }
});
ui.stop.addEventListener("click", () => state.running?.controller.abort());
$("new-chat").addEventListener("click", () => {
  if (activeConversation()?.messages.length !== 0) startConversation(); // an empty one is reused
  persist();
  showPanel("show-sidebar", false);
  render();
  ui.prompt.focus();
});
for (const [className, toggle] of Object.entries(PANEL_TOGGLES)) {
  toggle.addEventListener("click", () => showPanel(className, !document.body.classList.contains(className)));
}
for (const close of document.querySelectorAll(".close-panel")) {
  close.addEventListener("click", () => showPanel(close.dataset.panel, false));
}
ui.keyForm.addEventListener("submit", () => keyGiven()); // method=dialog closes the dialog first
$("key-cancel").addEventListener("click", () => {
  state.afterKey = null;
  ui.keyDialog.close();
});

if (!activeConversation()) state.activeId = state.conversations[0]?.id ?? null;
bindSettings();
render();
refreshStatus();
loadServerInfo();
ui.prompt.focus();
