// What the page keeps in the browser: conversations and settings in localStorage (they survive a reload
// and a restart of the browser), the API key in sessionStorage (this tab only, gone when it closes).

const CONVERSATIONS_KEY = "llmhost.conversations.v1";
const SETTINGS_KEY = "llmhost.settings.v1";
const API_KEY_KEY = "llmhost.apiKey";

export const DEFAULT_SETTINGS = Object.freeze({
  systemPrompt: "",
  temperature: 0.8, // llama-server's web UI defaults
  topP: 0.95,
  maxTokens: null, // none: up to the context
  template: "",
  templateVars: {},
});

function read(storage, key, fallback) {
  try {
    const text = storage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch (error) {
    console.warn(`llmhost: could not read ${key}`, error); // a corrupt entry must not break the page
    return fallback;
  }
}

function write(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
    return true;
  } catch (error) {
    console.warn(`llmhost: could not save ${key}`, error); // full, or storage disabled
    return false;
  }
}

/** `{conversations: [...], activeId}`; each conversation `{id, title, createdAt, messages}`. */
export function loadConversations() {
  const saved = read(localStorage, CONVERSATIONS_KEY, null);
  if (!saved || !Array.isArray(saved.conversations)) return { conversations: [], activeId: null };
  const conversations = saved.conversations.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages));
  return { conversations, activeId: saved.activeId ?? null };
}

export function saveConversations(conversations, activeId) {
  return write(localStorage, CONVERSATIONS_KEY, { conversations, activeId });
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(localStorage, SETTINGS_KEY, {}) };
}

export function saveSettings(settings) {
  return write(localStorage, SETTINGS_KEY, settings);
}

export function loadApiKey() {
  return read(sessionStorage, API_KEY_KEY, "") || "";
}

export function saveApiKey(key) {
  if (key) write(sessionStorage, API_KEY_KEY, key);
  else sessionStorage.removeItem(API_KEY_KEY);
}

export function newId() {
  return crypto.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
