// kinrec console: plain JS over the /v1 API (no build step, no external resources).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("kinrec.key") || "", user: "", info: null, last: [] };

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
  if (i.text_fields.length) $("text-field-name").textContent = i.text_fields[0];
  if (i.attribute_fields.length) $("attr-field-name").textContent = i.attribute_fields[0];
  const users = await api("GET", "/v1/users?limit=200");
  const list = $("user-list");
  list.replaceChildren(...users.users.map((u) => { const o = el("option"); o.value = u; return o; }));
  return true;
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
    title.addEventListener("click", () => showSimilar(it.item_id));
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

async function showSimilar(itemId) {
  const by = $("similar-by").value;
  let s;
  try {
    s = await api("GET", `/v1/items/${encodeURIComponent(itemId)}/similar?k=8&by=${by}`);
  } catch (e) { say(e.message, true); return; }
  $("similar").replaceChildren(...s.items.map((it) => el("li", it.title || it.item_id)));
}

async function addItem(event) {
  event.preventDefault();
  const info = state.info || { text_fields: [], attribute_fields: [] };
  const body = { item_id: $("new-item-id").value.trim(), text: {}, attributes: {} };
  if (info.text_fields.length) body.text[info.text_fields[0]] = $("new-item-title").value.trim();
  const attrs = $("new-item-attrs").value.split(",").map((a) => a.trim()).filter(Boolean);
  if (attrs.length && info.attribute_fields.length) body.attributes[info.attribute_fields[0]] = attrs;
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
$("api-key").value = state.key;
connect();
