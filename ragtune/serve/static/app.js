// The web app: conversations that stream answers with their sources, the document library and the compare reports.
// Everything the server sends (answers, passages, names, reports) is untrusted: it only reaches the page as text
// (textContent, text nodes, option labels), never as markup.
"use strict";

const KEY_STORE = "ragtune.apiKey"; // sessionStorage: gone when the tab closes, never in a URL
const OPEN_STORE = "ragtune.conversation"; // the conversation to reopen after a reload of this tab
const POLL_MS = 1000; // how often the library is re-read while a file waits or is being indexed
const $ = (id) => document.getElementById(id);
const ui = {
  settings: $("settings"), key: $("key"), connect: $("connect"), model: $("model"), error: $("error"),
  views: document.querySelectorAll(".views button"),
  newConversation: $("new-conversation"), conversations: $("conversation-list"), noConversations: $("no-conversations"),
  threadTitle: $("thread-title"), thread: $("thread"), status: $("status"),
  askForm: $("ask-form"), question: $("question"), ask: $("ask"),
  upload: $("upload"), libraryStatus: $("library-status"), docs: $("docs"), noDocs: $("no-docs"),
  reports: $("reports"), noReports: $("no-reports"), report: $("report"), reportTitle: $("report-title"),
  reportCharts: $("report-charts"), reportMarkdown: $("report-markdown"),
  panel: $("panel"), panelTitle: $("panel-title"), closePanel: $("close-panel"), panelPath: $("panel-path"),
  panelWhere: $("panel-where"), panelText: $("panel-text"), panelPage: $("panel-page"),
  panelPageStatus: $("panel-page-status"),
};
const state = {
  connected: false,
  current: null, // the open conversation's id, or null before the first question of a new one
  asking: false,
  opening: 0, // bumped by each open or new conversation: only the latest one may fill the thread
  pollTimer: null,
  opener: null, // the control that opened the source panel: focus goes back to it when the panel closes
  pageUrl: null, // object URL of the PDF page shown in the panel
  chartUrls: [], // object URLs of the open report's charts
};

// ---- errors ------------------------------------------------------------------------------------

// What to say for each status; the server's own message (OpenAI error shape) follows it.
const STATUS_HINTS = {
  401: "Wrong or missing API key",
  403: "Not allowed",
  404: "Not found",
  413: "The question is too long",
  429: "The server is busy, try again in a moment",
};

class ApiError extends Error {}

async function apiError(response, hints = {}) {
  let detail = "";
  let code = null;
  try {
    const error = (await response.json()).error; // {"error": {"message", "type", "param", "code"}}
    detail = error.message;
    code = error.code;
  } catch {
    detail = response.statusText; // not the OpenAI shape: a proxy, or a crash before the handler
  }
  const said = hints[response.status] || STATUS_HINTS[response.status] || "The request failed";
  const hint = `${said} (HTTP ${response.status})`;
  const err = new ApiError(detail ? `${hint}: ${detail}` : hint);
  err.code = code;
  return err;
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

function authorization() {
  return { Authorization: `Bearer ${ui.key.value.trim()}` };
}

// fetch with the key; a reply that is not 2xx becomes an ApiError carrying the server's message.
async function api(path, { method = "GET", json, body, hints } = {}) {
  const headers = authorization();
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
  if (!response.ok) throw await apiError(response, hints);
  return response;
}

async function getJson(path) {
  return (await api(path)).json();
}

// An image the API serves behind the key, as an object URL an <img> can show (revoke it when done).
async function imageUrl(path) {
  return URL.createObjectURL(await (await api(path)).blob());
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

// ---- small DOM builders ------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, label, onClick, className = "quiet") {
  const node = element("button", className, text);
  node.type = "button";
  if (label) node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

// A button that asks once more before it acts: the first press turns it into "Confirm", the second acts.
function confirmButton(text, label, onConfirm) {
  const node = button(text, label, () => {
    if (node.dataset.armed) return onConfirm();
    node.dataset.armed = "1";
    node.textContent = "Confirm";
    node.setAttribute("aria-label", `Confirm: ${label}`);
  });
  node.addEventListener("blur", () => {
    delete node.dataset.armed;
    node.textContent = text;
    node.setAttribute("aria-label", label);
  });
  return node;
}

function kib(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  return bytes < 1048576 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1048576).toFixed(1)} MiB`;
}

// ---- models --------------------------------------------------------------------------------------

function modelLabel(id) {
  const [mode, name] = id.includes(":") ? [id.slice(0, id.indexOf(":")), id.slice(id.indexOf(":") + 1)] : [id, ""];
  const words = {
    rag: "rag: answers from your documents",
    base: "base: the model alone",
    finetune: `finetune: adapter ${name}`,
    hybrid: `hybrid: documents and adapter ${name}`,
  };
  return words[mode] || id;
}

async function loadModels() {
  const ids = (await getJson("/v1/models")).data.map((m) => m.id);
  ui.model.replaceChildren(...ids.map((id) => new Option(modelLabel(id), id)));
  // RAG is what the page is for; fall back to the first model the server lists.
  ui.model.value = ids.includes("rag") ? "rag" : ids[0];
  ui.model.disabled = false;
}

// ---- support verdict and sources ---------------------------------------------------------------

// The support verdict (rag and hybrid): how much of the answer the sources hold. `reply` is the last chunk of
// a stream or a stored turn: both carry refused, support and sentences.
function supportText(reply) {
  if (reply.refused || !reply.support) return "";
  const sentences = reply.sentences || [];
  const held = sentences.filter((s) => s.support === "supported");
  const backing = [...new Set(held.map((s) => `[${s.source}]`))];
  const words = {
    supported: `Supported: every sentence is found in the sources (${backing.join(", ")}).`,
    partly: `Partly supported: ${held.length} of ${sentences.length} sentences found in the sources; check the others.`,
    unsupported: sentences.some((s) => s.support !== "unsupported")
      ? "Not supported: the retrieved sources do not cover what the question asks; check it."
      : "Not supported: no sentence of this answer is found in the retrieved sources; check it.",
  };
  return words[reply.support] || "";
}

function sourceItem(source, message) {
  const item = element("li");
  item.value = source.number; // keeps the list's numbers equal to the [n] the answer cites
  const open = button("", `Show source ${source.number}: ${source.path}`, (event) =>
    openSource(message, source.number, event.currentTarget),
  );
  open.classList.add("source-head");
  // Plain-text files have no locator (page, section, line); show only what there is.
  const score = typeof source.score === "number" ? `score ${source.score.toFixed(3)}` : "";
  const facts = [source.locator, score, source.supports ? "supports the answer" : ""];
  open.append(
    element("span", "number", `[${source.number}]`),
    element("code", "", source.path),
    element("span", "hint", facts.filter(Boolean).join(" · ")),
  );
  item.append(open);
  return item;
}

// ---- messages --------------------------------------------------------------------------------------

function userMessage(question) {
  const node = element("div", "message user");
  node.append(element("p", "who", "You"), element("p", "text", question));
  return node;
}

// An assistant message: its text (with [n] buttons once the sources are known), verdict, sources and notes.
function assistantMessage() {
  const root = element("article", "message assistant");
  root.dataset.testid = "answer";
  root.setAttribute("aria-label", "Answer");
  const message = {
    root,
    reply: { sources: [], sentences: [] },
    text: element("div", "answer"),
    support: element("p", "support"),
    notes: element("p", "hint notes"),
    sources: element("ol", "sources"),
  };
  message.support.setAttribute("role", "status");
  message.support.hidden = true;
  message.notes.hidden = true;
  message.sources.setAttribute("aria-label", "Sources of this answer");
  root.append(element("p", "who", "ragtune"), message.text, message.support, message.sources, message.notes);
  return message;
}

// Writes `text` into the message with each [n] that names one of its sources as a button opening that source.
function renderAnswerText(message, text) {
  const numbers = new Set(message.reply.sources.map((s) => s.number));
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(match[1]);
    if (!numbers.has(n)) continue;
    nodes.push(document.createTextNode(text.slice(last, match.index)));
    const path = message.reply.sources.find((s) => s.number === n).path;
    const show = (event) => openSource(message, n, event.currentTarget);
    const cite = button(`[${n}]`, `Source ${n}: ${path}`, show, "citation");
    cite.dataset.testid = "citation";
    nodes.push(cite);
    last = match.index + match[0].length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  message.text.replaceChildren(...nodes);
}

// The reply's fields (a stream's last chunk, or a stored turn) shown under its answer.
function finishMessage(message, text, reply) {
  message.reply = { ...reply, sources: reply.sources || [], sentences: reply.sentences || [] };
  renderAnswerText(message, text);
  message.support.textContent = supportText(reply);
  message.support.dataset.support = reply.support || "";
  message.support.hidden = !message.support.textContent;
  message.sources.replaceChildren(...message.reply.sources.map((s) => sourceItem(s, message)));
  const notes = [];
  if (reply.model) notes.push(`Model: ${reply.model}`);
  if (reply.query && reply.query !== reply.question) notes.push(`Searched for: ${reply.query}`);
  if (reply.complete === false) notes.push("Cut off: the answer did not finish.");
  if (!message.reply.sources.length && reply.model !== "base" && !reply.model?.startsWith("finetune")) {
    notes.push("No sources for this answer.");
  }
  message.notes.textContent = notes.join(" · ");
  message.notes.hidden = !notes.length;
}

function renderTurn(turn) {
  const message = assistantMessage();
  ui.thread.append(userMessage(turn.question), message.root);
  finishMessage(message, turn.answer, turn);
}

// ---- the source panel ------------------------------------------------------------------------------

// The passage as text nodes, with the character ranges that back the answer wrapped in <mark>.
function markedPassage(text, ranges) {
  const merged = [];
  for (const [a, b] of ranges.map(([a, b]) => [Math.max(0, a), Math.min(text.length, b)]).sort((x, y) => x[0] - y[0])) {
    if (b <= a) continue;
    const previous = merged[merged.length - 1];
    if (previous && a <= previous[1]) previous[1] = Math.max(previous[1], b);
    else merged.push([a, b]);
  }
  const nodes = [];
  let at = 0;
  for (const [a, b] of merged) {
    nodes.push(document.createTextNode(text.slice(at, a)), element("mark", "", text.slice(a, b)));
    at = b;
  }
  nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

function releasePage() {
  if (state.pageUrl) URL.revokeObjectURL(state.pageUrl);
  state.pageUrl = null;
  ui.panelPage.hidden = true;
  ui.panelPage.removeAttribute("src");
  ui.panelPageStatus.textContent = "";
}

async function openSource(message, number, opener) {
  const source = message.reply.sources.find((s) => s.number === number);
  if (!source) return;
  state.opener = opener;
  const ranges = message.reply.sentences.filter((s) => s.source === number && Array.isArray(s.span)).map((s) => s.span);
  ui.panelTitle.textContent = `Source [${number}]`;
  ui.panelPath.textContent = source.path;
  const unmatched = ranges.length ? "" : "no sentence of the answer is matched here";
  const facts = [source.locator, source.supports ? "supports the answer" : "", unmatched];
  ui.panelWhere.textContent = facts.filter(Boolean).join(" · ");
  ui.panelText.replaceChildren(...markedPassage(source.text || "", ranges));
  releasePage();
  ui.panel.hidden = false;
  ui.panelTitle.focus();
  ui.panelText.querySelector("mark")?.scrollIntoView({ block: "nearest" });
  // A PDF passage: the page it comes from, rendered by the server.
  const page = /page\s+(\d+)/i.exec(source.locator || "");
  if (page && source.document && /\.pdf$/i.test(source.path)) {
    ui.panelPageStatus.textContent = `Loading page ${page[1]}…`;
    try {
      const url = await imageUrl(`/v1/documents/${encodeURIComponent(source.document)}/pages/${page[1]}`);
      if (ui.panelPath.textContent !== source.path || ui.panel.hidden) return URL.revokeObjectURL(url);
      state.pageUrl = url;
      ui.panelPage.src = url;
      ui.panelPage.alt = `Page ${page[1]} of ${source.path}`;
      ui.panelPage.hidden = false;
      ui.panelPageStatus.textContent = "";
    } catch (err) {
      ui.panelPageStatus.textContent = `The page image could not be shown: ${err.message}`;
    }
  }
}

function closePanel() {
  ui.panel.hidden = true;
  releasePage();
  const back = state.opener && state.opener.isConnected ? state.opener : ui.question;
  state.opener = null;
  back.focus();
}

// ---- conversations ---------------------------------------------------------------------------------

// A conversation being renamed keeps its text field when the list is refreshed under it (an answer that ends
// refreshes the list), unless the refresh is the rename's own end (`keepEditing` false).
// Only the newest request's answer is drawn: a refresh started before a rename and answered after it would put
// the old title back.
let listRequests = 0;
async function loadConversations({ keepEditing = true } = {}) {
  const request = ++listRequests;
  const list = (await getJson("/v1/conversations")).data;
  if (request !== listRequests) return;
  const editing = keepEditing ? ui.conversations.querySelector("form.rename")?.closest("li") : null;
  ui.conversations.replaceChildren(
    ...list.map((c) => (editing && editing.dataset.id === c.id ? editing : conversationItem(c))),
  );
  ui.noConversations.hidden = list.length > 0;
  const open = list.find((c) => c.id === state.current);
  if (open) ui.threadTitle.textContent = open.title;
}

function conversationItem(conversation) {
  const item = element("li", "conversation");
  item.dataset.testid = "conversation";
  item.dataset.id = conversation.id;
  const current = conversation.id === state.current;
  const open = button(conversation.title, "", () => openConversation(conversation.id), "open");
  open.dataset.testid = "conversation-open";
  if (current) open.setAttribute("aria-current", "true");
  const turns = element("small", "", `${conversation.turn_count} ${conversation.turn_count === 1 ? "turn" : "turns"}`);
  const rename = button("Rename", `Rename ${conversation.title}`, () => startRename(item, conversation));
  const remove = confirmButton("Delete", `Delete ${conversation.title}`, () => deleteConversation(conversation.id));
  const actions = element("div", "actions");
  actions.append(rename, remove);
  item.append(open, turns, actions);
  return item;
}

// Rename in place: a text field over the title; Enter saves, Escape puts the title back.
function startRename(item, conversation) {
  const form = element("form", "rename");
  const field = element("input");
  field.value = conversation.title;
  field.maxLength = 200;
  field.required = true;
  field.setAttribute("aria-label", `New title for ${conversation.title}`);
  const save = element("button", "", "Save");
  save.type = "submit";
  const done = { keepEditing: false };
  const cancel = button("Cancel", `Cancel renaming ${conversation.title}`, () =>
    loadConversations(done).catch(showError),
  );
  form.append(field, save, cancel);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const title = field.value.trim();
    if (!title) return;
    try {
      await api(`/v1/conversations/${encodeURIComponent(conversation.id)}`, { method: "PATCH", json: { title } });
      clearError();
      await loadConversations(done);
      ui.conversations.querySelector(`li[data-id="${CSS.escape(conversation.id)}"] .open`)?.focus();
    } catch (err) {
      showError(err);
    }
  });
  field.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation(); // Escape here cancels the rename, not the source panel
    loadConversations(done)
      .then(() => ui.conversations.querySelector(`li[data-id="${CSS.escape(conversation.id)}"] .open`)?.focus())
      .catch(showError);
  });
  item.replaceChildren(form);
  field.focus();
  field.select();
}

async function deleteConversation(id) {
  try {
    await api(`/v1/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
    clearError();
    if (id === state.current) newConversation();
    await loadConversations();
    ui.newConversation.focus();
  } catch (err) {
    showError(err);
  }
}

// An empty thread: the next question starts a new conversation (created on the server when it is asked).
function newConversation() {
  if (state.asking) {
    ui.status.textContent = "Wait for this answer to finish, then start a new conversation.";
    return;
  }
  state.opening += 1;
  state.current = null;
  sessionStorage.removeItem(OPEN_STORE);
  ui.thread.replaceChildren();
  ui.threadTitle.textContent = "New conversation";
  ui.status.textContent = "";
  for (const open of ui.conversations.querySelectorAll(".open")) open.removeAttribute("aria-current");
  if (!ui.panel.hidden) closePanel();
  ui.question.focus();
}

async function openConversation(id) {
  if (state.asking) return; // the thread is being written: switching now would lose the stream's place
  const ticket = ++state.opening;
  try {
    const conversation = await getJson(`/v1/conversations/${encodeURIComponent(id)}`);
    if (ticket !== state.opening) return; // another conversation was opened meanwhile: that one is shown
    clearError();
    state.current = id;
    sessionStorage.setItem(OPEN_STORE, id);
    ui.threadTitle.textContent = conversation.title;
    ui.thread.replaceChildren();
    conversation.turns.forEach(renderTurn);
    const count = conversation.turns.length;
    ui.status.textContent = `${count} ${count === 1 ? "turn" : "turns"} loaded.`;
    for (const open of ui.conversations.querySelectorAll(".open")) {
      if (open.closest("li").dataset.id === id) open.setAttribute("aria-current", "true");
      else open.removeAttribute("aria-current");
    }
    if (!ui.panel.hidden) closePanel();
    ui.thread.lastElementChild?.scrollIntoView({ block: "end" });
  } catch (err) {
    if (ticket !== state.opening) return;
    if (id === sessionStorage.getItem(OPEN_STORE)) sessionStorage.removeItem(OPEN_STORE);
    showError(err);
  }
}

// ---- asking ----------------------------------------------------------------------------------------

async function ask() {
  const question = ui.question.value.trim();
  if (!question || state.asking) return;
  if (ui.model.disabled) {
    await connect(); // asking before connecting: fetch the models with the key typed so far
    if (ui.model.disabled) return;
  }
  clearError();
  const model = ui.model.value;
  state.asking = true;
  ui.ask.disabled = true;
  const asked = userMessage(question);
  const message = assistantMessage();
  message.root.setAttribute("aria-busy", "true");
  let text = "";
  let gone = false;
  ui.status.textContent = "Answering…";
  const started = performance.now();
  try {
    if (!state.current) {
      const created = await (await api("/v1/conversations", { method: "POST", json: { model } })).json();
      state.current = created.id;
      sessionStorage.setItem(OPEN_STORE, created.id);
    }
    ui.thread.append(asked, message.root);
    message.root.scrollIntoView({ block: "end" });
    const response = await api(`/v1/conversations/${encodeURIComponent(state.current)}/turns`, {
      method: "POST",
      json: { question, model, stream: true },
    });
    const streamed = message.text.appendChild(document.createTextNode(""));
    let last = {};
    for await (const chunk of events(response)) {
      if (chunk.error) throw new ApiError(chunk.error.message); // an OpenAI-style error inside the stream
      const content = chunk.choices?.[0]?.delta?.content;
      if (content) {
        text += content;
        streamed.data = text;
      }
      // The chunk carrying finish_reason also carries the sources and the verdict (no sources for base models).
      if (chunk.choices?.[0]?.finish_reason) last = chunk;
    }
    finishMessage(message, text, { ...last, model, question });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    ui.status.textContent = `Done in ${seconds} s with ${model}.`;
    ui.question.value = "";
  } catch (err) {
    ui.status.textContent = "Failed.";
    if (text) {
      finishMessage(message, text, { model, question, complete: false });
    } else {
      asked.remove(); // nothing came back: the question stays in the box to ask again
      message.root.remove();
    }
    showError(err);
    gone = err.code === "conversation_not_found";
  } finally {
    message.root.setAttribute("aria-busy", "false");
    state.asking = false;
    ui.ask.disabled = false;
  }
  // Deleted elsewhere (another tab, the API): the next question starts a new conversation; the error stays.
  if (gone) newConversation();
  loadConversations().catch(() => {}); // the new title and turn count; a failure here says nothing new
}

// ---- the document library --------------------------------------------------------------------------

async function loadLibrary() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  const docs = (await getJson("/v1/library")).data;
  ui.docs.replaceChildren(...docs.map(docItem));
  ui.noDocs.hidden = docs.length > 0;
  const busy = docs.filter((d) => d.state === "queued" || d.state === "indexing");
  ui.libraryStatus.textContent = busy.length
    ? `Indexing ${busy.length} ${busy.length === 1 ? "file" : "files"}…`
    : `${docs.filter((d) => d.state === "indexed").length} of ${docs.length} indexed.`;
  if (busy.length) state.pollTimer = setTimeout(poll, POLL_MS);
}

function poll() {
  loadLibrary().catch((err) => {
    ui.libraryStatus.textContent = `The library could not be read: ${err.message}`;
    state.pollTimer = setTimeout(poll, POLL_MS * 5); // keep trying, more slowly, while the server is away
  });
}

function docItem(doc) {
  const item = element("li", "doc");
  item.dataset.testid = "doc";
  item.dataset.state = doc.state;
  const name = element("code", "name", doc.name);
  const words = {
    queued: "queued",
    indexing: "indexing",
    indexed: doc.chunks != null ? `indexed · ${doc.chunks} ${doc.chunks === 1 ? "chunk" : "chunks"}` : "indexed",
    skipped: `skipped${doc.detail ? `: ${doc.detail}` : ""}`,
    failed: `failed${doc.detail ? `: ${doc.detail}` : ""}`,
  };
  const status = element("span", `state ${doc.state}`, words[doc.state] || doc.state);
  const size = element("span", "hint", typeof doc.bytes === "number" ? kib(doc.bytes) : "");
  item.append(name, status, size);
  if (doc.state === "indexing" || doc.state === "queued") {
    const bar = element("progress");
    bar.max = 1;
    if (typeof doc.progress === "number") bar.value = doc.progress; // no value: an indeterminate bar
    bar.setAttribute("aria-label", `Indexing progress of ${doc.name}`);
    item.append(bar);
  }
  if (doc.deletable) {
    item.append(confirmButton("Delete", `Delete ${doc.name}`, () => deleteDoc(doc)));
  } else {
    item.append(element("span", "hint", "indexed from another folder"));
  }
  return item;
}

async function uploadFiles() {
  const files = [...ui.upload.files];
  if (!files.length) return;
  clearError();
  for (const file of files) {
    ui.libraryStatus.textContent = `Uploading ${file.name}…`;
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      await api("/v1/library", { method: "POST", body: form, hints: { 413: "The file is too large" } });
    } catch (err) {
      showError(err);
    }
  }
  ui.upload.value = "";
  await loadLibrary().catch(showError);
}

async function deleteDoc(doc) {
  try {
    await api(`/v1/library/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
    clearError();
    await loadLibrary();
    ui.upload.focus();
  } catch (err) {
    showError(err);
  }
}

// ---- reports ---------------------------------------------------------------------------------------

async function loadReports() {
  const reports = (await getJson("/v1/reports")).data;
  ui.reports.replaceChildren(
    ...reports.map((report) => {
      const item = element("li", "report-item");
      const open = button(report.id, `Open report ${report.id}`, () => openReport(report.id), "open");
      item.append(open, element("p", "verdict", report.verdict || "No verdict recorded."));
      return item;
    }),
  );
  ui.noReports.hidden = reports.length > 0;
}

async function openReport(id) {
  try {
    const report = await getJson(`/v1/reports/${encodeURIComponent(id)}`);
    clearError();
    for (const url of state.chartUrls) URL.revokeObjectURL(url);
    state.chartUrls = [];
    ui.reportTitle.textContent = report.id;
    ui.reportMarkdown.textContent = report.markdown || ""; // the markdown source as text: nothing in it is rendered
    ui.reportCharts.replaceChildren();
    ui.report.hidden = false;
    ui.reportTitle.focus();
    for (const name of report.charts || []) {
      const file = name.endsWith(".png") ? name : `${name}.png`;
      const url = await imageUrl(`/v1/reports/${encodeURIComponent(id)}/charts/${encodeURIComponent(file)}`);
      state.chartUrls.push(url);
      const figure = element("figure");
      const image = element("img");
      image.src = url;
      image.alt = `${file.replace(/\.png$/, "")} chart of report ${report.id}`;
      figure.append(image, element("figcaption", "hint", file));
      ui.reportCharts.append(figure);
    }
  } catch (err) {
    showError(err);
  }
}

// ---- views and connecting --------------------------------------------------------------------------

function showView(name) {
  for (const tab of ui.views) tab.setAttribute("aria-pressed", String(tab.dataset.view === name));
  for (const view of ["chat", "library", "reports"]) $(`${view}-view`).hidden = view !== name;
  if (name !== "chat" && !ui.panel.hidden) closePanel();
  if (!state.connected) return;
  if (name === "library") loadLibrary().catch(showError);
  if (name === "reports") loadReports().catch(showError);
}

async function connect() {
  clearError();
  ui.connect.disabled = true;
  try {
    await loadModels();
    state.connected = true;
    const ticket = state.opening;
    await loadConversations();
    // Reopen the conversation this tab had open, unless one was opened (or a new one begun) in the meantime.
    const reopen = sessionStorage.getItem(OPEN_STORE);
    if (reopen && ticket === state.opening && reopen !== state.current && !state.asking) await openConversation(reopen);
    if (!$("library-view").hidden) await loadLibrary();
    if (!$("reports-view").hidden) await loadReports();
  } catch (err) {
    if (!state.connected) {
      ui.model.replaceChildren(new Option("Connect first", ""));
      ui.model.disabled = true;
    }
    showError(err);
  } finally {
    ui.connect.disabled = false;
  }
}

ui.key.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, ui.key.value.trim()));

ui.settings.addEventListener("submit", (event) => {
  event.preventDefault();
  state.connected = false;
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

for (const tab of ui.views) tab.addEventListener("click", () => showView(tab.dataset.view));
ui.newConversation.addEventListener("click", newConversation);
ui.closePanel.addEventListener("click", closePanel);
ui.upload.addEventListener("change", uploadFiles);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !ui.panel.hidden) {
    event.preventDefault();
    closePanel();
  }
});

// A key saved earlier in this tab (e.g. before a reload) connects straight away.
ui.key.value = sessionStorage.getItem(KEY_STORE) || "";
if (ui.key.value) connect();
