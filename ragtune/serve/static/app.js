// The chat page: list the models, stream an answer over /v1/chat/completions, show its sources.
// Model output and document text are untrusted: they only ever reach the page through textContent.
"use strict";

const KEY_STORE = "ragtune.apiKey"; // sessionStorage: gone when the tab closes, never in a URL
const $ = (id) => document.getElementById(id);
const ui = {
  settings: $("settings"), key: $("key"), connect: $("connect"), model: $("model"),
  askForm: $("ask-form"), question: $("question"), ask: $("ask"), error: $("error"),
  result: $("result"), status: $("status"), answer: $("answer"), support: $("support"),
  sources: $("sources"), noSources: $("no-sources"),
};

// ---- errors ------------------------------------------------------------------------------------

// What to say for each status; the server's own message (OpenAI error shape) follows it.
const STATUS_HINTS = {
  401: "Wrong or missing API key",
  404: "Not found",
  413: "The question is too long",
  429: "The server is busy, try again in a moment",
};

class ApiError extends Error {}

async function apiError(response) {
  let detail = "";
  try {
    detail = (await response.json()).error.message; // {"error": {"message", "type", "param", "code"}}
  } catch {
    detail = response.statusText; // not the OpenAI shape: a proxy, or a crash before the handler
  }
  const hint = `${STATUS_HINTS[response.status] || "The request failed"} (HTTP ${response.status})`;
  return new ApiError(detail ? `${hint}: ${detail}` : hint);
}

function showError(err) {
  // fetch rejects with a TypeError when the server cannot be reached or the connection drops.
  const offline = err instanceof TypeError;
  ui.error.textContent = offline ? `Cannot reach the server (is ragtune serve running?): ${err.message}` : err.message;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

// ---- API calls ---------------------------------------------------------------------------------

function headers() {
  return { Authorization: `Bearer ${ui.key.value.trim()}`, "Content-Type": "application/json" };
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) throw await apiError(response);
  const ids = (await response.json()).data.map((m) => m.id);
  ui.model.replaceChildren(...ids.map((id) => new Option(id, id)));
  // RAG is what the page is for; fall back to the first model the server lists.
  ui.model.value = ids.includes("rag") ? "rag" : ids[0];
  ui.model.disabled = false;
}

// Yields each parsed `data:` event of an OpenAI server-sent-event stream, stopping at [DONE].
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
  throw new ApiError("The answer was cut off: the connection closed before it finished.");
}

// ---- rendering ---------------------------------------------------------------------------------

// The support verdict the last chunk carries (rag and hybrid): how much of the answer the sources hold.
function renderSupport(chunk) {
  const sentences = chunk.sentences || [];
  const held = sentences.filter((s) => s.support === "supported").length;
  const backing = [...new Set(sentences.filter((s) => s.support === "supported").map((s) => `[${s.source}]`))];
  const words = {
    supported: `Supported: every sentence is found in the sources (${backing.join(", ")}).`,
    partly: `Partly supported: ${held} of ${sentences.length} sentences found in the sources; check the others.`,
    unsupported: "Not supported: no sentence of this answer is found in the retrieved sources; check it.",
  };
  ui.support.textContent = chunk.refused || !chunk.support ? "" : words[chunk.support];
  ui.support.dataset.support = chunk.support || "";
  ui.support.hidden = !ui.support.textContent;
}

function renderSources(sources) {
  ui.sources.replaceChildren(...sources.map(sourceItem));
  ui.noSources.hidden = sources.length > 0;
}

function sourceItem(source) {
  const item = document.createElement("li");
  item.value = source.number; // keeps the list's numbers equal to the [n] the answer cites

  const head = document.createElement("div");
  head.className = "source-head";
  const number = span("number", `[${source.number}]`);
  const path = document.createElement("code");
  path.textContent = source.path;
  // Plain-text files have no locator (page, section, line); show only what there is.
  const facts = [source.locator, `score ${source.score.toFixed(3)}`, source.supports ? "supports the answer" : ""];
  const where = span("hint", facts.filter(Boolean).join(" · "));
  head.append(number, path, where);

  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Passage text";
  const text = document.createElement("pre");
  text.textContent = source.text;
  details.append(summary, text);

  item.append(head, details);
  return item;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

// ---- actions -----------------------------------------------------------------------------------

async function connect() {
  clearError();
  ui.connect.disabled = true;
  try {
    await loadModels();
  } catch (err) {
    ui.model.replaceChildren(new Option("Connect first", ""));
    ui.model.disabled = true;
    showError(err);
  } finally {
    ui.connect.disabled = false;
  }
}

async function ask() {
  const question = ui.question.value.trim();
  if (!question) return;
  if (ui.model.disabled) {
    await connect(); // asking before connecting: fetch the models with the key typed so far
    if (ui.model.disabled) return;
  }
  clearError();
  ui.ask.disabled = true;
  ui.result.hidden = false;
  ui.answer.textContent = "";
  ui.answer.setAttribute("aria-busy", "true");
  renderSources([]);
  renderSupport({});
  ui.noSources.hidden = true; // unknown until the last chunk arrives
  ui.status.textContent = "Answering…";
  const started = performance.now();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: ui.model.value, stream: true, messages: [{ role: "user", content: question }] }),
    });
    if (!response.ok) throw await apiError(response);
    for await (const chunk of events(response)) {
      if (chunk.error) throw new ApiError(chunk.error.message); // an OpenAI-style error inside the stream
      const content = chunk.choices?.[0]?.delta?.content;
      if (content) ui.answer.textContent += content;
      // The chunk carrying finish_reason also carries the retrieved passages (absent for base models).
      if (chunk.sources) renderSources(chunk.sources);
      if (chunk.support !== undefined) renderSupport(chunk);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    ui.status.textContent = `Done in ${seconds} s with ${ui.model.value}.`;
  } catch (err) {
    ui.status.textContent = "Failed.";
    showError(err);
  } finally {
    ui.answer.setAttribute("aria-busy", "false");
    ui.ask.disabled = false;
  }
}

ui.key.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, ui.key.value.trim()));

ui.settings.addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});

ui.askForm.addEventListener("submit", (event) => {
  event.preventDefault();
  ask();
});

ui.question.addEventListener("keydown", (event) => {
  // Enter asks, Shift+Enter adds a line; leave Enter alone while an input method is composing.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (!ui.ask.disabled) ui.askForm.requestSubmit();
  }
});

// A key saved earlier in this tab (e.g. before a reload) connects straight away.
ui.key.value = sessionStorage.getItem(KEY_STORE) || "";
if (ui.key.value) connect();
