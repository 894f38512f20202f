// The search page of `retrieval serve`: vanilla JS, no build step, no dependencies.
// The HTTP API it speaks is the server's (GET /api/indexes, POST .../search, ...);
// every item id goes into a URL through encodeURIComponent, since ids may hold "/".

const $ = (id) => document.getElementById(id);
const MAP_POLL_MS = 1000;
const MAP_POLL_LIMIT = 600; // ten minutes: the map's first computation trains a small model

const state = {
  indexes: [],
  index: null,      // SUMMARY of the selected index
  query: null,      // the last query: {kind: "text", text} | {kind: "like", like} | {kind: "image", file}
  mapPoints: [],
  mapCursor: -1,
  generation: 0,    // bumped on every index switch, so late answers for the old index are dropped
};

// -- small helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const indexUrl = (name) => `/api/indexes/${encodeURIComponent(name)}`;
const itemUrl = (name, id) => `${indexUrl(name)}/items/${encodeURIComponent(id)}`;

function formatScore(score) {
  if (typeof score !== "number" || !Number.isFinite(score)) return String(score);
  return Math.abs(score) >= 100 ? score.toFixed(0) : score.toFixed(3);
}

function status(message) {
  $("status").textContent = message;
}

function showError(message) {
  const alert = $("alert");
  alert.textContent = message;
  alert.hidden = false;
}

function clearError() {
  const alert = $("alert");
  alert.hidden = true;
  alert.textContent = "";
}

class ApiError extends Error {}

/** fetch JSON; a non-2xx answer becomes an ApiError carrying the server's {"error"} message. */
async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new ApiError(`the server did not answer (${err.message}); is \`retrieval serve\` still running?`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(message);
  }
  return {status: response.status, body};
}

function reportFailure(err) {
  const message = err instanceof ApiError ? err.message : `unexpected error: ${err.message}`;
  showError(message);
  status("Failed: the error is shown above."); // the alert region reads the message itself
}

// -- indexes ---------------------------------------------------------------------------------

async function loadIndexes() {
  try {
    const {body} = await api("/api/indexes");
    state.indexes = body.indexes || [];
  } catch (err) {
    reportFailure(err);
    return;
  }
  const select = $("index-select");
  select.replaceChildren(...state.indexes.map((ix) =>
    el("option", {value: ix.name, text: `${ix.name} (${ix.modality}, ${ix.items} items)`})));
  if (!state.indexes.length) {
    showError("no index is served; start the server with index names, e.g. `retrieval serve demo-docs`");
    return;
  }
  const wanted = new URLSearchParams(location.search).get("index");
  const initial = state.indexes.find((ix) => ix.name === wanted) || state.indexes[0];
  select.value = initial.name;
  selectIndex(initial.name);
}

function selectIndex(name) {
  const summary = state.indexes.find((ix) => ix.name === name);
  if (!summary) return;
  state.generation += 1;
  state.index = summary;
  state.query = null;
  clearError();
  const images = summary.modality === "images";
  $("text-query").hidden = images;
  $("image-query").hidden = !images;
  $("query-preview").hidden = true;
  $("image-input").value = "";

  const methods = $("method-select");
  methods.replaceChildren(...summary.methods.map((m) =>
    el("option", {value: m, text: m === summary.default_method ? `${m} (default)` : m})));
  methods.value = summary.default_method || summary.methods[0];

  const compare = $("compare-toggle");
  compare.disabled = !summary.baseline;
  if (!summary.baseline) compare.checked = false;
  $("compare-help").textContent = summary.baseline
    ? `${summary.default_method} beside ${summary.baseline}`
    : "this index has no baseline to compare with";
  methods.disabled = compare.checked;

  const info = [`${summary.items} items`, `metric ${summary.metric}`];
  if (summary.code_dim) info.push(`${summary.code_dim}-d codes`);
  if (summary.binary) info.push("binary codes");
  if (summary.built) info.push(`built ${summary.built}`);
  $("index-info").textContent = info.join(" · ");

  $("results").replaceChildren(el("p", {class: "empty", text: images
    ? "Drop an image or choose a file to find its neighbours."
    : "Type a query and press Enter."}));
  $("novelty").hidden = true;
  resetMap();
  loadEvaluation(summary.name, state.generation);
  status(`Index ${summary.name}: ${summary.items} ${images ? "images" : "documents"}.`);
}

// -- evaluation ------------------------------------------------------------------------------

/** The stored evaluation as rows {method, metric: value, ...}: a list, or the report's {"methods": {...}}. */
function evaluationRows(evaluation) {
  if (Array.isArray(evaluation)) return evaluation;
  if (evaluation && evaluation.methods && typeof evaluation.methods === "object") {
    return Object.entries(evaluation.methods).map(([method, row]) => ({method, ...row}));
  }
  return [];
}

async function loadEvaluation(name, generation) {
  const box = $("evaluation");
  box.replaceChildren(el("p", {class: "empty", text: "Loading…"}));
  let detail;
  try {
    ({body: detail} = await api(indexUrl(name)));
  } catch (err) {
    if (generation === state.generation) {
      box.replaceChildren(el("p", {class: "empty", text: "The evaluation could not be loaded."}));
      reportFailure(err);
    }
    return;
  }
  if (generation !== state.generation) return;
  const evaluation = detail.evaluation;
  const rows = evaluationRows(evaluation);
  if (!evaluation || !rows.length) {
    box.replaceChildren(el("p", {class: "empty", text: "Not evaluated yet. Run `retrieval evaluate` to fill this table."}));
    return;
  }
  // "k" and "queries" describe the whole evaluation: the caption says them once.
  const shared = new Set(["method", "k", "queries"]);
  const columns = [];
  for (const row of rows) {
    for (const [key, value] of Object.entries(row)) {
      if (!shared.has(key) && typeof value === "number" && !columns.includes(key)) columns.push(key);
    }
  }
  const best = columns.find((c) => c.startsWith("map")) || columns[0];
  const top = Math.max(...rows.map((r) => (typeof r[best] === "number" ? r[best] : -Infinity)));
  const about = Array.isArray(evaluation) ? rows[0] : evaluation;
  const caption = [];
  if (about.queries) caption.push(`${about.queries} labelled queries`);
  if (about.k) caption.push(`k = ${about.k}`);
  const table = el("table", {class: "evaluation"},
    el("caption", {text: caption.length ? caption.join(", ") : "Retrieval quality by method"}),
    el("thead", {}, el("tr", {}, el("th", {scope: "col", text: "method"}),
      columns.map((c) => el("th", {scope: "col", text: c.replaceAll("_", " ")})))),
    el("tbody", {}, rows.map((row) => el("tr", {class: row[best] === top ? "best" : null},
      el("th", {scope: "row", text: row.method + (row.method === state.index.default_method ? " (default)" : "")}),
      columns.map((c) => el("td", {text: typeof row[c] === "number" ? formatMetric(c, row[c]) : ""}))))));
  box.replaceChildren(table);
}

function formatMetric(name, value) {
  if (/bytes/.test(name)) return value.toFixed(0);
  return /ms/.test(name) ? value.toFixed(2) : value.toFixed(3);
}

// -- search ----------------------------------------------------------------------------------

function currentK() {
  const k = Number.parseInt($("k-input").value, 10);
  return Number.isFinite(k) ? k : 10;
}

/** The filters typed in the form: {label?, where?} (empty fields left out). */
function currentFilters() {
  const filters = {};
  const label = $("label-filter").value.trim();
  const where = $("where-filter").value.trim();
  if (label) filters.label = label;
  if (where) filters.where = where;
  return filters;
}

/** POST one search; `query` is {kind, text|like|file}. */
async function searchOnce(name, query, method) {
  const url = `${indexUrl(name)}/search`;
  const k = currentK();
  const filters = currentFilters();
  if (query.kind === "image") {
    const form = new FormData();
    form.append("image", query.file, query.file.name || "query.png");
    form.append("k", String(k));
    if (method) form.append("method", method);
    for (const [key, value] of Object.entries(filters)) form.append(key, value);
    return (await api(url, {method: "POST", body: form})).body;
  }
  const payload = {k, ...filters};
  if (method) payload.method = method;
  if (query.kind === "text") payload.text = query.text;
  else payload.like = query.like;
  return (await api(url, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(payload),
  })).body;
}

function describeQuery(query) {
  if (query.kind === "text") return `“${query.text}”`;
  if (query.kind === "like") return `items like ${query.like}`;
  return `the image ${query.file.name || ""}`.trim();
}

async function runQuery(query) {
  const summary = state.index;
  if (!summary) return;
  state.query = query;
  const generation = state.generation;
  clearError();
  const compare = $("compare-toggle").checked && summary.baseline;
  const results = $("results");
  results.setAttribute("aria-busy", "true");
  status(`Searching ${summary.name} for ${describeQuery(query)}…`);
  try {
    if (compare) {
      const methods = [summary.default_method, summary.baseline];
      const answers = await Promise.all(methods.map((m) => searchOnce(summary.name, query, m)));
      if (generation !== state.generation) return;
      renderCompare(answers);
      showNovelty(answers[0].novelty);
      status(`${answers[0].hits.length} hits by ${answers[0].method} and ${answers[1].hits.length} by ` +
             `${answers[1].method} for ${describeQuery(query)}; ${countShared(answers)} found by both.`);
    } else {
      const answer = await searchOnce(summary.name, query, $("method-select").value);
      if (generation !== state.generation) return;
      renderSingle(answer);
      showNovelty(answer.novelty);
      status(`${answer.hits.length} ${answer.hits.length === 1 ? "hit" : "hits"} by ${answer.method} for ` +
             `${describeQuery(query)} in ${answer.took_ms.toFixed(1)} ms.`);
    }
  } catch (err) {
    if (generation === state.generation) reportFailure(err);
  } finally {
    results.removeAttribute("aria-busy");
  }
}

function rerun() {
  if (state.query) runQuery(state.query);
}

function countShared(answers) {
  const right = new Set(answers[1].hits.map((h) => h.id));
  return answers[0].hits.filter((h) => right.has(h.id)).length;
}

// -- results ---------------------------------------------------------------------------------

function hitCard(hit, {shared = null} = {}) {
  const images = state.index.modality === "images";
  const title = hit.title || hit.id;
  const open = el("button", {type: "button", class: "hit-open", onclick: () => openItem(hit.id)},
    images && hit.thumbnail
      ? el("img", {src: hit.thumbnail, alt: `${hit.label ? hit.label + ": " : ""}${title}`, loading: "lazy",
                   width: 96, height: 96})
      : el("span", {class: "hit-title", text: title}));
  const meta = el("p", {class: "hit-meta"},
    el("span", {class: "rank", text: `#${hit.rank}`}),
    hit.label ? el("span", {class: "label", text: hit.label}) : null,
    el("span", {class: "score", text: `score ${formatScore(hit.score)}`}),
    shared ? el("span", {class: "badge"}, "shared",
                el("span", {class: "visually-hidden", text: `: also found by ${shared}`})) : null);
  return el("li", {class: `hit${shared ? " shared" : ""}`, dataset: {id: hit.id}},
    open, meta,
    !images && hit.snippet ? el("p", {class: "snippet", text: hit.snippet}) : null,
    images ? el("p", {class: "hit-id", text: title}) : null,
    el("button", {type: "button", class: "more-like", onclick: () => moreLike(hit.id),
                  "aria-label": `More like ${title}`}, "More like this"));
}

function hitList(answer, sharedWith = null, otherIds = new Set()) {
  const images = state.index.modality === "images";
  if (!answer.hits.length) return el("p", {class: "empty", text: answer.message || "No hits."});
  return el("ol", {class: images ? "grid images" : "grid docs"},
    answer.hits.map((hit) => hitCard(hit, {shared: otherIds.has(hit.id) ? sharedWith : null})));
}

function renderSingle(answer) {
  $("results").replaceChildren(hitList(answer));
  $("results").classList.remove("compare");
}

function renderCompare([left, right]) {
  const leftIds = new Set(left.hits.map((h) => h.id));
  const rightIds = new Set(right.hits.map((h) => h.id));
  const column = (answer, role, other, otherIds) => el("section", {class: `column ${role}`,
      "aria-labelledby": `column-${role}`},
    el("h3", {id: `column-${role}`}, answer.method,
       el("span", {class: "column-role", text: role === "default" ? " (autoencoder)" : " (baseline)"})),
    hitList(answer, other, otherIds));
  const shared = countShared([left, right]);
  $("results").replaceChildren(
    el("p", {class: "compare-note"}, el("span", {class: "badge", "aria-hidden": "true"}, "shared"),
       ` marks the ${shared} of ${left.hits.length} hits both methods found.`),
    el("div", {class: "columns"},
      column(left, "default", right.method, rightIds),
      column(right, "baseline", left.method, leftIds)));
  $("results").classList.add("compare");
}

function showNovelty(novelty) {
  const box = $("novelty");
  if (!novelty || typeof novelty.score !== "number") {
    box.hidden = true;
    return;
  }
  const pct = Math.round(novelty.percentile);
  let words = `Novelty ${formatScore(novelty.score)}: higher than ${pct} % of the indexed items`;
  // The verdict comes from the server (retrieval/novelty.py: judge), thresholds and all.
  if (novelty.verdict === "unlike") words += " (nothing like it is indexed)";
  else if (novelty.verdict === "typical") words += " (a typical item for this index)";
  else if (novelty.verdict === "unjudged") {
    words += ` (too few to judge: the models learned from ${novelty.reference_items} items)`;
  }
  $("novelty-text").textContent = words + ".";
  $("novelty-bar").style.width = `${Math.max(0, Math.min(100, novelty.percentile))}%`;
  box.hidden = false;
}

function moreLike(id) {
  const dialog = $("item-dialog");
  if (dialog.open) dialog.close();
  $("query-preview").hidden = true;
  runQuery({kind: "like", like: id});
  $("results-heading").focus();
}

// -- item dialog -----------------------------------------------------------------------------

async function openItem(id) {
  const summary = state.index;
  const dialog = $("item-dialog");
  let item;
  try {
    ({body: item} = await api(itemUrl(summary.name, id)));
  } catch (err) {
    reportFailure(err);
    return;
  }
  $("item-title").textContent = item.title || item.id;
  const meta = [`id ${item.id}`];
  if (item.label) meta.push(`label ${item.label}`);
  if (item.path && item.path !== item.id) meta.push(item.path);
  const metaBox = $("item-meta");
  metaBox.replaceChildren(meta.join(" · "));
  if (item.url && /^https?:/i.test(item.url)) {
    metaBox.append(" · ", el("a", {href: item.url, rel: "noopener noreferrer", target: "_blank", text: "source"}));
  }
  const body = $("item-body");
  if (summary.modality === "images") {
    const src = item.thumbnail || `${itemUrl(summary.name, item.id)}/thumbnail`;
    body.replaceChildren(el("img", {class: "item-image", src,
      alt: `${item.label ? item.label + ": " : ""}${item.title || item.id}`}));
  } else {
    body.replaceChildren(el("pre", {class: "item-text", text: item.text || "(no text stored)"}));
  }
  $("item-more").onclick = () => moreLike(item.id);
  if (!dialog.open) dialog.showModal();
  $("item-close").focus();
}

// -- map -------------------------------------------------------------------------------------

// Tableau's 20 colours, reordered so that the first ten are the most distinct on white.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                 "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];

function colourFor(labels) {
  const colours = new Map();
  labels.forEach((label, i) => colours.set(label, i < PALETTE.length
    ? PALETTE[i] : `hsl(${(i * 137.5) % 360} 65% 45%)`));
  return (label) => colours.get(label) || "#555";
}

function resetMap() {
  state.mapPoints = [];
  state.mapCursor = -1;
  $("map").replaceChildren();
  $("legend").replaceChildren();
  const button = $("map-button");
  button.disabled = false;
  button.textContent = "Show the map";
}

async function loadMap() {
  const summary = state.index;
  const generation = state.generation;
  const button = $("map-button");
  button.disabled = true;
  clearError();
  try {
    for (let attempt = 0; attempt < MAP_POLL_LIMIT; attempt++) {
      const {status: code, body} = await api(summary.map || `${indexUrl(summary.name)}/map`);
      if (generation !== state.generation) return;
      if (code !== 202) {
        drawMap(body);
        button.textContent = "Map shown";
        return;
      }
      if (attempt === 0) status(`Computing the map of ${summary.name}; this can take a minute the first time…`);
      await new Promise((resolve) => setTimeout(resolve, MAP_POLL_MS));
    }
    throw new ApiError("the map is still being computed; try again later");
  } catch (err) {
    if (generation === state.generation) {
      reportFailure(err);
      button.disabled = false;
    }
  }
}

function drawMap(map) {
  const points = map.points || [];
  const W = 640, H = 420, PAD = 12;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => PAD + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - 2 * PAD);
  const sy = (y) => H - PAD - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (H - 2 * PAD);
  const labels = map.labels && map.labels.length ? map.labels
    : [...new Set(points.map((p) => p.label).filter((l) => l !== null && l !== undefined))];
  const colour = colourFor(labels);

  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "map-svg", role: "img", tabindex: "0",
    "aria-label": `Map of ${points.length} items by ${map.method || "the autoencoder"}, coloured by label ` +
                  "(arrow keys step through points, Enter opens one)"});
  root.append(svg("rect", {x: 0, y: 0, width: W, height: H, class: "map-bg"}));
  const layer = svg("g", {class: "points"});
  // Left/Right walk the points from left to right, so keyboard users can reach every item.
  state.mapPoints = points.map((p) => ({...p, cx: sx(p.x), cy: sy(p.y)})).sort((a, b) => a.cx - b.cx);
  state.mapPoints.forEach((p, i) => {
    const dot = svg("circle", {cx: p.cx.toFixed(1), cy: p.cy.toFixed(1), r: 3.5, fill: colour(p.label),
      class: "point", "data-id": p.id, "data-index": i});
    const tip = svg("title", {});
    tip.textContent = `${p.label ?? "no label"}: ${p.id}`;
    dot.append(tip);
    layer.append(dot);
  });
  root.append(layer);
  const cursor = svg("circle", {r: 7, class: "map-cursor", visibility: "hidden"});
  root.append(cursor);
  layer.addEventListener("click", (event) => {
    const id = event.target.getAttribute && event.target.getAttribute("data-id");
    if (id !== null) openItem(id);
  });
  root.addEventListener("keydown", (event) => mapKey(event, cursor));
  $("map").replaceChildren(root);

  const counts = new Map();
  for (const p of points) counts.set(p.label, (counts.get(p.label) || 0) + 1);
  $("legend").replaceChildren(...labels.map((label) => el("li", {},
    el("span", {class: "swatch", style: `background:${colour(label)}`, "aria-hidden": "true"}),
    `${label} (${counts.get(label) || 0})`)));
  status(`Map of ${points.length} items drawn, ${labels.length} labels.`);
}

function mapKey(event, cursor) {
  const points = state.mapPoints;
  if (!points.length) return;
  const step = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1}[event.key];
  if (step) {
    event.preventDefault();
    state.mapCursor = (state.mapCursor + step + points.length) % points.length;
    const p = points[state.mapCursor];
    cursor.setAttribute("cx", p.cx.toFixed(1));
    cursor.setAttribute("cy", p.cy.toFixed(1));
    cursor.setAttribute("visibility", "visible");
    status(`Point ${state.mapCursor + 1} of ${points.length}: ${p.label ?? "no label"}, ${p.id}`);
  } else if (event.key === "Enter" && state.mapCursor >= 0) {
    event.preventDefault();
    openItem(points[state.mapCursor].id);
  }
}

// -- wiring ----------------------------------------------------------------------------------

function imageChosen(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (${file.type}); choose a PNG or JPEG file`);
    return;
  }
  const preview = $("query-image");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `Your query image ${file.name || ""}`.trim();
  $("query-preview").hidden = false;
  runQuery({kind: "image", file});
}

function wire() {
  $("index-select").addEventListener("change", (event) => selectIndex(event.target.value));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.index && state.index.modality === "images") {
      rerun();
      return;
    }
    const text = $("query").value.trim();
    if (!text) {
      showError("the query is empty; type a few words to search for");
      $("query").focus();
      return;
    }
    runQuery({kind: "text", text});
  });
  $("method-select").addEventListener("change", rerun);
  $("k-input").addEventListener("change", rerun);
  $("label-filter").addEventListener("change", rerun);
  $("where-filter").addEventListener("change", rerun);
  $("compare-toggle").addEventListener("change", (event) => {
    $("method-select").disabled = event.target.checked;
    rerun();
  });

  const zone = $("drop-zone");
  const input = $("image-input");
  zone.addEventListener("click", () => input.click());
  input.addEventListener("change", () => imageChosen(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    if (!files || !files.length) {
      showError("nothing to search: drop an image file (PNG or JPEG)");
      return;
    }
    imageChosen(files[0]);
  });

  $("map-button").addEventListener("click", loadMap);
  const dialog = $("item-dialog");
  $("item-close").addEventListener("click", () => dialog.close());
  $("item-close-2").addEventListener("click", () => dialog.close());
  // A click on the backdrop (outside the dialog's box) closes it too.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
}

wire();
loadIndexes();
