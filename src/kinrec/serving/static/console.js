// kinrec console: plain JS over the /v1 API (no build step, no external resources).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem("kinrec.key") || "", user: "", info: null, last: [], item: "",
  curveUrl: "",
};
const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (state.key) headers["Authorization"] = "Bearer " + state.key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const error = new Error(data.error || res.statusText);
    error.status = res.status;
    throw error;
  }
  return data;
}

// a binary resource (the training curve) with the key, as an object URL for an <img>
async function apiBlobUrl(path) {
  const headers = {};
  if (state.key) headers["Authorization"] = "Bearer " + state.key;
  const res = await fetch(path, { headers });
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    const error = new Error(data.error || res.statusText);
    error.status = res.status;
    throw error;
  }
  return URL.createObjectURL(await res.blob());
}

async function connect() {
  try {
    state.info = await api("GET", "/v1/info");
  } catch (e) {
    $("status").textContent = e.status === 401 || e.status === 403
      ? "enter an API key" : (e.status === 503 ? "model loading…" : "error: " + e.message);
    if (e.status === 503) setTimeout(connect, 1000);
    return false;
  }
  const i = state.info;
  $("status").textContent =
    `${i.model} on ${i.dataset}: ${i.n_recommendable_items} items, fold-in ${i.fold_in}, ` +
    `index ${i.index}${i.auth ? "" : " (no auth)"}`;
  buildItemForm(i);
  showTraining();
  const users = await api("GET", "/v1/users?limit=200");
  const list = $("user-list");
  list.replaceChildren(...users.users.map((u) => { const o = el("option"); o.value = u; return o; }));
  return true;
}

// ---------------------------------------------------------------- the add-item form
// One input per text field (the first required: it is the title) and per attribute field;
// attribute inputs take comma-separated tokens (every attribute field holds a token list).
function buildItemForm(info) {
  const inputs = [];
  info.text_fields.forEach((field, n) => {
    const input = el("input");
    input.dataset.text = field;
    if (n === 0) { input.id = "new-item-title"; input.required = true; }
    const label = el("label", field);
    label.append(input);
    inputs.push(label);
  });
  for (const field of info.attribute_fields) {
    const input = el("input");
    input.dataset.attr = field;
    input.placeholder = "comma separated";
    const label = el("label", `${field} (comma separated)`);
    label.append(input);
    inputs.push(label);
  }
  $("item-fields").replaceChildren(...inputs);
  fieldExamples(info);  // placeholders from a few catalogue items, when they come
}

async function fieldExamples(info) {
  if (!info.attribute_fields.length && !info.text_fields.length) return;
  try {
    const some = await api("GET", "/v1/items?limit=3");
    const items = await Promise.all(some.items.map((it) =>
      api("GET", `/v1/items/${encodeURIComponent(it.item_id)}`)));
    const seen = {};
    for (const item of items) {
      for (const [field, tokens] of Object.entries(item.attributes || {})) {
        seen[field] = [...new Set([...(seen[field] || []), ...tokens])].slice(0, 2);
      }
    }
    for (const input of document.querySelectorAll("#item-fields input[data-attr]")) {
      const tokens = seen[input.dataset.attr];
      if (tokens && tokens.length) input.placeholder = "e.g. " + tokens.join(", ");
    }
    const first = items.find((it) => it.text && Object.keys(it.text).length);
    for (const input of document.querySelectorAll("#item-fields input[data-text]")) {
      const sample = first && first.text[input.dataset.text];
      if (sample) input.placeholder = "e.g. " + (sample.length > 40 ? sample.slice(0, 40) + "…" : sample);
    }
  } catch (e) { /* placeholders are decoration */ }
}

// ---------------------------------------------------------------- the training curve
async function showTraining() {
  const img = $("training-curve");
  const note = $("training-note");
  try {
    const url = await apiBlobUrl("/v1/model/training.png");
    if (state.curveUrl) URL.revokeObjectURL(state.curveUrl);
    state.curveUrl = url;
    img.src = url;
    img.hidden = false;
    note.textContent = "Mean training loss and validation NDCG@10 per epoch; " +
      "the dashed line marks the epoch whose state the model kept.";
  } catch (e) {
    img.hidden = true;
    note.textContent = e.status === 404 ? e.message + "." : "training curve unavailable: " + e.message;
  }
}

async function loadUser() {
  const user = $("user-input").value.trim();
  if (!user) { say("type a user id", true); return; }
  if (user !== state.user) state.last = [];
  state.user = user;
  $("explanation").hidden = true;
  await Promise.all([showRecs(), showHistory()]);
}

async function showRecs() {
  const params = new URLSearchParams({ k: "10" });
  const category = $("category").value.trim();
  if (category) params.set("category", category);
  const slots = $("new-slots").value.trim();
  if (slots) params.set("new_item_slots", slots);
  const path = `/v1/users/${encodeURIComponent(state.user)}/recommendations?${params}`;
  let data;
  try { data = await api("GET", path); } catch (e) { say(e.message, true); return; }
  $("rec-user").textContent = `for ${data.user_id}${data.cold_start ? " (new user: popular)" : ""}`;
  const before = new Set(state.last);
  const items = data.items.map((it) => {
    const li = el("li");
    li.dataset.item = it.item_id;
    if (state.last.length && !before.has(it.item_id)) li.classList.add("changed");
    const title = el("span", it.title || it.item_id, "title");
    title.addEventListener("click", () => showItem(it.item_id, it.title));
    if (it.new) li.append(el("span", "new", "badge"), " ");
    li.append(title, el("span", it.score.toFixed(3), "score"), el("br"),
      el("span", it.reason, "reason"), el("br"));
    const like = el("button", "like", "small like-btn");
    like.type = "button";
    like.addEventListener("click", () => likeItem(it.item_id, it.title));
    const why = el("button", "why?", "small why-btn");
    why.type = "button";
    why.addEventListener("click", () => explain(it.item_id));
    li.append(like, " ", why);
    return li;
  });
  $("recs").replaceChildren(...items);
  state.last = data.items.map((it) => it.item_id);
}

async function showHistory() {
  let h;
  try {
    h = await api("GET", `/v1/users/${encodeURIComponent(state.user)}/history?limit=20`);
  } catch (e) { say(e.message, true); return; }
  $("events").replaceChildren(...h.events.map((e) =>
    el("li", `${e.type} ${e.title || e.item_id}${e.value == null ? "" : " (" + e.value + ")"}`)));
  $("n-trained").textContent = `(${h.n_trained_items} items)`;
  $("history").replaceChildren(...h.trained_items.map((t) => el("li", t.title || t.item_id)));
}

async function likeItem(itemId, title) {
  try {
    await api("POST", "/v1/events", { user_id: state.user, item_id: itemId, type: "like" });
  } catch (e) { say(e.message, true); return; }
  say(`liked ${title || itemId}`);
  await Promise.all([showRecs(), showHistory()]);
}

async function explain(itemId) {
  let x;
  try {
    x = await api("GET",
      `/v1/users/${encodeURIComponent(state.user)}/recommendations/${encodeURIComponent(itemId)}/explanation`);
  } catch (e) { say(e.message, true); return; }
  $("why-title").textContent = x.title || x.item_id;
  $("why-reason").textContent = x.reason;
  $("why-liked").replaceChildren(...x.similar_liked_items.map((s) =>
    el("li", `${s.title || s.item_id} (similarity ${s.similarity.toFixed(2)})`)));
  $("why-paths").replaceChildren(...x.kg_paths.map((p) =>
    el("li", p.steps.map((s) => `${s.head} —${s.relation}→ ${s.tail}`).join("  ·  "))));
  if (!x.kg_paths.length) $("why-paths").replaceChildren(el("li", "none found", "muted"));
  $("explanation").hidden = false;
}

// ---------------------------------------------------------------- looking at an item
async function showItem(itemId, title) {
  state.item = itemId;
  $("item-name").textContent = title || itemId;
  $("item-hint").hidden = true;
  $("item-view").hidden = false;
  await Promise.all([showSimilar(itemId), showGraph(itemId)]);
}

async function showSimilar(itemId) {
  const by = $("similar-by").value;
  let s;
  try {
    s = await api("GET", `/v1/items/${encodeURIComponent(itemId)}/similar?k=8&by=${by}`);
  } catch (e) {
    $("similar").replaceChildren(el("li", e.message, "muted"));
    return;
  }
  $("similar").replaceChildren(...s.items.map((it) => {
    const li = el("li");
    const title = el("span", it.title || it.item_id, "title");
    title.addEventListener("click", () => showItem(it.item_id, it.title));
    li.append(title);
    return li;
  }));
}

function edgeText(e) {
  const rel = e.direction === "out" ? `—${e.relation}→` : `←${e.relation}—`;
  return [rel, e.title || e.entity];
}

async function showGraph(itemId) {
  let g;
  try {
    g = await api("GET", `/v1/items/${encodeURIComponent(itemId)}/graph?limit=24`);
  } catch (e) {
    $("kg").replaceChildren();
    $("kg-list").replaceChildren(el("li", e.message, "muted"));
    return;
  }
  $("kg-count").textContent = g.n_edges ? `(${g.n_edges} edges)` : "";
  if (!g.edges.length) {
    $("kg").replaceChildren();
    $("kg-list").replaceChildren(el("li", g.graph ? "no graph edges for this item"
      : "this catalogue has no knowledge graph", "muted"));
    return;
  }
  $("kg").replaceChildren(graphSvg(g));
  $("kg-list").replaceChildren(...g.edges.map((e) => {
    const li = el("li");
    const [rel, name] = edgeText(e);
    li.append(el("span", rel, "relation"), " ", el("b", name));
    if (e.n_items) {
      const names = e.items.map((x) => x.title || x.item_id).join(", ");
      li.append(el("span", ` — ${e.n_items} other item${e.n_items === 1 ? "" : "s"}` +
        (names ? `: ${names}${e.n_items > e.items.length ? ", …" : ""}` : ""), "muted"));
    }
    return li;
  }));
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

// The item in the middle, its first 10 entities around it, each edge named by its relation.
function graphSvg(g) {
  const W = 320, H = 250, cx = W / 2, cy = H / 2, rx = 108, ry = 88;
  const edges = g.edges.slice(0, 10);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `knowledge graph around ${g.title || g.item_id}` });
  const nodes = edges.map((e, n) => {
    const a = -Math.PI / 2 + (2 * Math.PI * n) / edges.length;
    return { e, x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a) };
  });
  for (const { e, x, y } of nodes) {
    svg.append(svgEl("line", { x1: cx, y1: cy, x2: x, y2: y, class: "edge" }));
    const [rel] = edgeText(e);
    svg.append(svgEl("text", { x: cx + (x - cx) * 0.55, y: cy + (y - cy) * 0.55 - 3,
      "text-anchor": "middle", class: "relation" }, rel));
  }
  for (const { e, x, y } of nodes) {
    const group = svgEl("g", { class: "entity" });
    group.append(svgEl("title", {}, `${e.entity}: ${e.n_items} other items`));
    group.append(svgEl("circle", { cx: x, cy: y, r: 5, fill: e.item_id ? "#2f6feb" : "#d97706" }));
    const below = y >= cy;
    group.append(svgEl("text", { x, y: below ? y + 16 : y - 16, "text-anchor": "middle",
      class: "node-label" }, clip(e.title || e.entity, 20)));
    if (e.n_items) {
      group.append(svgEl("text", { x, y: below ? y + 27 : y - 8, "text-anchor": "middle",
        class: "count" }, `+${e.n_items} item${e.n_items === 1 ? "" : "s"}`));
    }
    svg.append(group);
  }
  const label = clip(g.title || g.item_id, 22);
  const w = Math.max(60, label.length * 6.4 + 16);
  svg.append(svgEl("rect", { x: cx - w / 2, y: cy - 13, width: w, height: 26, rx: 13,
    class: "item-node" }));
  svg.append(svgEl("text", { x: cx, y: cy + 4, "text-anchor": "middle", class: "item-label" },
    label));
  return svg;
}

async function addItem(event) {
  event.preventDefault();
  const body = { item_id: $("new-item-id").value.trim(), text: {}, attributes: {} };
  for (const input of document.querySelectorAll("#item-fields input[data-text]")) {
    const value = input.value.trim();
    if (value) body.text[input.dataset.text] = value;
  }
  for (const input of document.querySelectorAll("#item-fields input[data-attr]")) {
    const tokens = input.value.split(",").map((a) => a.trim()).filter(Boolean);
    if (tokens.length) body.attributes[input.dataset.attr] = tokens;
  }
  try {
    const item = await api("POST", "/v1/items", body);
    say(`added ${item.title || item.item_id}` +
      (item.recommendable ? "" : " (this model cannot recommend new items until retrained)"));
  } catch (e) { say(e.message, true); return; }
  if (state.user) await showRecs();
}

$("save-key").addEventListener("click", async () => {
  state.key = $("api-key").value.trim();
  localStorage.setItem("kinrec.key", state.key);
  if (await connect()) say("connected");
});
$("load-user").addEventListener("click", loadUser);
$("user-input").addEventListener("keydown", (e) => { if (e.key === "Enter") loadUser(); });
$("item-form").addEventListener("submit", addItem);
$("similar-by").addEventListener("change", () => { if (state.item) showSimilar(state.item); });
$("api-key").value = state.key;
connect();
