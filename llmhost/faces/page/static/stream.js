// Talking to the server: JSON requests with the API key, the OpenAI chat stream read with fetch and a
// ReadableStream (EventSource cannot POST), and the split of raw `<think>` blocks out of an answer.

/** A refusal from the server, with its status and the message its error body carries. */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The message of any error body llmhost sends (OpenAI's, the detail shape, the simple API's). */
async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return body?.error?.message ?? body?.detail ?? body?.error ?? text;
  } catch {
    return text || response.statusText;
  }
}

/** fetch() that throws an HttpError on a non-2xx answer. */
export async function request(url, { apiKey, json, signal, method } = {}) {
  const headers = {};
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url, {
    method: method ?? (json === undefined ? "GET" : "POST"),
    headers,
    body: json === undefined ? undefined : JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw new HttpError(response.status, String(await errorMessage(response)));
  return response;
}

/** The `data:` payloads of a server-sent event stream, as strings, until the stream ends. */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5));
        if (data.length) yield data.join("\n"); // comment lines (": ping") carry no data
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Streams one chat completion. `onDelta({content, reasoning})` gets every piece as it comes; the result
 * is `{finishReason, usage}` (usage from `stream_options.include_usage`). An error event after the
 * stream started throws an Error with its message; aborting `signal` throws an AbortError.
 */
export async function streamChat(url, body, { apiKey, signal, onDelta }) {
  const response = await request(url, {
    apiKey,
    signal,
    json: { ...body, stream: true, stream_options: { include_usage: true } },
  });
  let finishReason = null;
  let usage = null;
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message ?? String(chunk.error));
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices?.[0];
    if (!choice) continue;
    if (choice.finish_reason) finishReason = choice.finish_reason;
    const content = choice.delta?.content ?? "";
    const reasoning = choice.delta?.reasoning_content ?? choice.delta?.reasoning ?? "";
    if (content || reasoning) onDelta({ content, reasoning });
  }
  return { finishReason, usage };
}

const OPEN = "<think>";
const CLOSE = "</think>";

/**
 * Splits raw model text into its thinking and its answer, for servers that send `<think>…</think>`
 * inside the content (no `--reasoning-parser`). `isThinking` is true while a block is still open. A
 * `</think>` with no `<think>` before it closes a block the chat template opened in the prompt.
 */
export function splitThinking(raw) {
  const text = raw.trimStart();
  if (text.startsWith(OPEN)) {
    const rest = text.slice(OPEN.length);
    const end = rest.indexOf(CLOSE);
    if (end < 0) return { thinking: withoutPartialTag(rest, CLOSE), answer: "", isThinking: true };
    return { thinking: rest.slice(0, end).trim(), answer: rest.slice(end + CLOSE.length).trimStart(), isThinking: false };
  }
  if (text && OPEN.startsWith(text)) return { thinking: "", answer: "", isThinking: false }; // "<thi" so far
  const end = raw.indexOf(CLOSE);
  if (end >= 0 && !raw.slice(0, end).includes(OPEN)) {
    return { thinking: raw.slice(0, end).trim(), answer: raw.slice(end + CLOSE.length).trimStart(), isThinking: false };
  }
  return { thinking: "", answer: raw, isThinking: false };
}

/** `text` without a trailing prefix of `tag` ("…</thi" mid-stream shows as "…"). */
function withoutPartialTag(text, tag) {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n -= 1) {
    if (text.endsWith(tag.slice(0, n))) return text.slice(0, -n).trim();
  }
  return text.trim();
}
