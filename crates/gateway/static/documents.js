// The document pages' script, served as /static/documents.js: uploads with
// a progress bar per file (/upload), the live list of one's documents
// (/documents), and questions answered with citations (/ask). Each page
// runs the part whose form or table it has.
//
// Every call to /api/... carries `X-Echo-CSRF: 1`, the gateway's proof
// that a session call comes from its own pages. User data (file names,
// errors, answers, snippets) reaches the page through textContent only,
// never as HTML.
"use strict";

const CSRF_HEADER = "X-Echo-CSRF";
const POLL_MS = 1000;
const STATUS_WORDS = {
  uploading: "Uploading",
  queued: "Queued",
  processing: "Processing",
  done: "Done",
  failed: "Failed",
};

// --- shared -----------------------------------------------------------

/** A new `tag` element with `className` and, if given, `text`. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The session ended: sign in again, then come back here. */
function signInAgain() {
  const here = location.pathname + location.search;
  location.assign("/login?return_to=" + encodeURIComponent(here));
}

/** What a failed answer says for people: every error of the gateway and
 * of the services behind it is an RFC 9457 problem whose `detail` does. */
function messageOf(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  return "the request failed (HTTP " + status + ")";
}

/** `method path` with the CSRF header (and `json` as the body); rejects
 * with an Error whose message is for people. */
async function request(method, path, json) {
  const init = { method, headers: { [CSRF_HEADER]: "1" }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    signInAgain();
    throw new Error("your session has ended");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(messageOf(response.status, body));
  }
  return response;
}

/** `request`, answered with its JSON body (null for 204). */
async function api(method, path, json) {
  const response = await request(method, path, json);
  return response.status === 204 ? null : response.json();
}

function pending(doc) {
  return doc.status === "queued" || doc.status === "processing";
}

function statusWords(doc) {
  const word = STATUS_WORDS[doc.status] || doc.status;
  return doc.status === "processing" ? word + " " + doc.progress + "%" : word;
}

/** `/documents#doc-<id>`: the document's row, highlighted. */
function rowLink(id) {
  return "/documents#doc-" + encodeURIComponent(id);
}

function contentPath(id) {
  return "/api/documents/" + encodeURIComponent(id) + "/content";
}

// --- /upload ----------------------------------------------------------

function setUpUpload(form) {
  const input = form.elements.file;
  const list = document.getElementById("uploads");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const file of input.files) list.append(upload(file));
    form.reset();
  });
}

/** Sends `file` as its own request; answers its list item, whose bar
 * shows the upload and whose status then follows the indexing. */
function upload(file) {
  const item = el("li", "upload");
  const name = el("a", "name", file.name);
  const status = el("span", "status");
  const bar = el("progress");
  bar.max = 100;
  bar.value = 0;
  item.append(name, status, bar, el("span", "upload-error"));
  show(item, { status: "uploading" });

  const body = new FormData();
  body.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/documents");
  xhr.setRequestHeader(CSRF_HEADER, "1");
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) bar.value = Math.round((100 * event.loaded) / event.total);
  });
  xhr.addEventListener("load", () => {
    if (xhr.status === 401) return signInAgain();
    const created = xhr.status === 201 && xhr.response && xhr.response.documents;
    if (!created || !created[0]) return fail(item, messageOf(xhr.status, xhr.response));
    bar.value = 100;
    name.href = rowLink(created[0].id);
    follow(item, created[0]);
  });
  xhr.addEventListener("error", () => fail(item, "the upload did not get through"));
  xhr.send(body);
  return item;
}

/** Shows `doc`'s status on its upload item until it is done or failed. */
function follow(item, doc) {
  show(item, doc);
  if (!pending(doc)) return;
  setTimeout(() => {
    api("GET", "/api/documents/" + encodeURIComponent(doc.id)).then(
      (now) => follow(item, now),
      (error) => fail(item, error.message),
    );
  }, POLL_MS);
}

function show(item, doc) {
  item.dataset.status = doc.status;
  item.querySelector(".status").textContent = statusWords(doc);
  item.querySelector("progress").hidden = doc.status === "failed";
  item.querySelector(".upload-error").textContent = doc.error || "";
}

function fail(item, message) {
  show(item, { status: "failed", error: message });
}

// --- /documents -------------------------------------------------------

function setUpDocuments(table) {
  const rows = table.tBodies[0];
  const empty = document.getElementById("no-documents");
  const problem = document.getElementById("documents-error");
  const usage = document.getElementById("usage");
  let timer;
  let first = true;

  function report(message) {
    problem.textContent = message;
    problem.hidden = false;
  }

  async function refresh() {
    clearTimeout(timer);
    let docs;
    try {
      const answer = await api("GET", "/api/documents");
      docs = answer.documents;
      if (answer.usage) showUsage(usage, answer.usage);
    } catch (error) {
      report("Your documents cannot be shown right now: " + error.message);
      timer = setTimeout(refresh, 5 * POLL_MS);
      return;
    }
    problem.hidden = true;
    render(rows, docs);
    table.dataset.count = String(docs.length);
    table.hidden = docs.length === 0;
    empty.hidden = docs.length !== 0;
    if (first) highlightTarget();
    first = false;
    if (docs.some(pending)) timer = setTimeout(refresh, POLL_MS);
  }

  rows.addEventListener("click", (event) => {
    const row = event.target.closest("tr");
    if (event.target.closest("a.download")) {
      event.preventDefault();
      download(row.dataset.id, row.dataset.name).catch((error) =>
        report("The download failed: " + error.message),
      );
    } else if (event.target.closest("button.delete")) {
      if (!confirm("Delete " + row.dataset.name + "?")) return;
      api("DELETE", "/api/documents/" + encodeURIComponent(row.dataset.id)).then(refresh, (error) =>
        report("The document was not deleted: " + error.message),
      );
    }
  });
  refresh();
}

/** Brings `rows` in line with `docs` (newest first), updating rows in
 * place so a button under the pointer stays put between polls. */
function render(rows, docs) {
  const wanted = new Set(docs.map((doc) => "doc-" + doc.id));
  for (const row of [...rows.rows]) if (!wanted.has(row.id)) row.remove();
  docs.forEach((doc, index) => {
    const row = document.getElementById("doc-" + doc.id) || newRow(doc);
    if (rows.rows[index] !== row) rows.insertBefore(row, rows.rows[index] || null);
    fillRow(row, doc);
  });
}

function newRow(doc) {
  const row = el("tr");
  row.id = "doc-" + doc.id;
  row.dataset.id = doc.id;
  row.dataset.name = doc.name;
  const status = el("td", "status");
  status.append(el("span", "status-text"), el("progress"), el("span", "doc-error"));
  status.querySelector("progress").max = 100;
  const actions = el("td", "actions");
  const link = el("a", "download", "Download");
  link.href = contentPath(doc.id);
  const remove = el("button", "delete", "Delete");
  remove.type = "button";
  actions.append(link, " ", remove);
  row.append(
    el("td", "name", doc.name),
    el("td", "type", String(doc.type || "").toUpperCase()),
    el("td", "size", formatSize(doc.size)),
    el("td", "created", formatTime(doc.created_at)),
    status,
    actions,
  );
  return row;
}

function fillRow(row, doc) {
  row.dataset.status = doc.status;
  const cell = row.querySelector("td.status");
  cell.className = "status status-" + doc.status;
  cell.querySelector(".status-text").textContent = statusWords(doc);
  const bar = cell.querySelector("progress");
  bar.value = doc.status === "done" ? 100 : doc.progress || 0;
  bar.hidden = doc.status === "failed";
  cell.querySelector(".doc-error").textContent = doc.status === "failed" ? doc.error || "" : "";
}

/** The row `#doc-<id>` in the address (a citation's link), marked and
 * scrolled to: it did not exist yet when the page loaded. */
function highlightTarget() {
  const id = decodeURIComponent(location.hash.slice(1));
  const row = id && document.getElementById(id);
  if (!row) return;
  row.classList.add("highlight");
  row.scrollIntoView({ block: "center" });
}

/** Saves the document's original bytes as `name`: fetched with the CSRF
 * header, which a plain link cannot send. */
async function download(id, name) {
  const response = await request("GET", contentPath(id));
  const url = URL.createObjectURL(await response.blob());
  const link = el("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60 * 1000);
}

function formatSize(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
  if (bytes < 1024 * 1024 * 1024) return (bytes / (1024 * 1024)).toFixed(1) + " MB";
  return (bytes / (1024 * 1024 * 1024)).toFixed(1) + " GB";
}

/** "You store 3 of 10,000 documents, 1.2 MB of 1.0 GB." */
function showUsage(node, usage) {
  const count = (n) => n.toLocaleString("en");
  node.textContent =
    "You store " + count(usage.files) + " of " + count(usage.quota_files) + " documents, " +
    formatSize(usage.bytes) + " of " + formatSize(usage.quota_bytes) + ".";
  node.hidden = false;
}

/** `created_at` (RFC 3339) in the reader's time zone. */
function formatTime(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

// --- /ask -------------------------------------------------------------

function setUpAsk(form) {
  const button = form.querySelector("button");
  const status = document.getElementById("ask-status");
  const answer = document.getElementById("answer");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = form.elements.question.value.trim();
    if (!question) return;
    button.disabled = true;
    status.classList.remove("error");
    status.textContent = "Searching your documents…";
    try {
      showAnswer(await api("POST", "/api/query", { question }));
      status.textContent = "";
    } catch (error) {
      answer.hidden = true;
      status.classList.add("error");
      status.textContent = "No answer: " + error.message;
    } finally {
      button.disabled = false;
    }
  });
}

function showAnswer(result) {
  const citations = result.citations || [];
  document.getElementById("answer-text").textContent = result.answer;
  const list = document.getElementById("citations");
  list.replaceChildren(...citations.map(citation));
  list.dataset.count = String(citations.length);
  document.getElementById("sources").hidden = citations.length === 0;
  document.getElementById("answer").hidden = false;
}

/** A citation: the document's name (a link to its row on /documents),
 * which passage, and the snippet. */
function citation(cited) {
  const item = el("li", "citation");
  const link = el("a", "citation-link");
  link.href = rowLink(cited.document_id);
  link.append(el("span", "citation-name", cited.name));
  item.append(link);
  if (typeof cited.position === "number") {
    item.append(el("span", "muted", " · passage " + (cited.position + 1)));
  }
  item.append(el("blockquote", "snippet", cited.snippet));
  return item;
}

// --- start ------------------------------------------------------------

const uploadForm = document.getElementById("upload-form");
if (uploadForm) setUpUpload(uploadForm);
const documentsTable = document.getElementById("documents");
if (documentsTable) setUpDocuments(documentsTable);
const askForm = document.getElementById("ask-form");
if (askForm) setUpAsk(askForm);
