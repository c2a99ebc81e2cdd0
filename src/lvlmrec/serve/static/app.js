// The lvlmrec page: one view (a user, a search or an item's neighbours) shown by two
// representations side by side. Plain DOM and fetch; every text from the catalog goes in
// through textContent, never as HTML. The view lives in the URL hash, so a link (or a
// browser test) can open it directly: #user=12&left=a&right=b&k=10, #q=red%20dress, #item=5.
"use strict";

const $ = (selector) => document.querySelector(selector);
const columns = ["left", "right"].map((id) => document.getElementById(id));
const THUMB = 256;
let representations = [];
let metric = "recall@10"; // the report metric, from /representations
let view = null; // {user: id} | {q: text} | {item: id}
let generation = 0; // bumped by every show(): answers to an older view are dropped

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function imageUrl(item, size = THUMB) {
  return `${item.image_url}?size=${size}`;
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ")
      : body.detail;
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function k() {
  return Number($("#k").value);
}

// ------------------------------------------------------------------ the URL hash
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const [i, side] of ["left", "right"].entries()) {
    const name = params.get(side);
    if (name && representations.some((r) => r.name === name)) selectOf(i).value = name;
  }
  if (params.get("k")) $("#k").value = params.get("k");
  if (params.has("user")) return {user: Number(params.get("user"))};
  if (params.has("q")) return {q: params.get("q")};
  if (params.has("item")) return {item: Number(params.get("item"))};
  return null;
}

function writeHash() {
  const params = new URLSearchParams();
  if (view) for (const [key, value] of Object.entries(view)) params.set(key, value);
  params.set("left", selectOf(0).value);
  params.set("right", selectOf(1).value);
  params.set("k", k());
  history.replaceState(null, "", `#${params}`);
}

function selectOf(i) {
  return columns[i].querySelector(".rep-select");
}

// ------------------------------------------------------------------ cards
function reasonText(reasons, method) {
  if (!reasons.length) return "";
  const names = reasons.map((r) => `${r.title || "item " + r.item_id} (${r.weight.toFixed(2)})`);
  return `Because of your history (${method}): ${names.join(", ")}`;
}

function card(item, method) {
  const li = el("li", {className: "card"});
  li.dataset.itemId = item.item_id;
  if (item.hit) li.classList.add("hit");
  li.append(
    el("img", {className: "rec-image", src: imageUrl(item), alt: item.title, loading: "eager"}),
    el("span", {className: "rank", textContent: `#${item.rank}`}),
  );
  if (item.hit) li.append(el("span", {className: "badge", textContent: "test hit"}));
  li.append(
    el("h4", {textContent: item.title || `item ${item.item_id}`}),
    el("p", {className: "desc", textContent: item.description}),
    el("p", {className: "meta",
             textContent: `score ${item.score.toFixed(3)} · item ${item.item_id}`}),
  );
  const reasons = item.because || [];
  if (reasons.length) {
    const because = el("div", {className: "because"}, [el("span", {textContent: "because:"})]);
    for (const r of reasons) {
      because.append(el("img", {src: `/items/${r.item_id}/image?size=64`, loading: "lazy",
                                alt: r.title, title: `${r.title} (${r.weight.toFixed(2)})`}));
    }
    li.append(because);
    li.title = reasonText(reasons, method);
  }
  const more = el("button", {className: "more", type: "button", textContent: "More like this"});
  more.addEventListener("click", () => show({item: item.item_id}));
  li.append(more);
  return li;
}

function fillColumn(column, items, summary, method) {
  column.querySelector(".summary").textContent = summary;
  const list = column.querySelector(".items");
  list.replaceChildren(...items.map((item) => card(item, method)));
  if (!items.length) list.append(el("li", {className: "empty", textContent: "nothing to show"}));
}

function columnError(column, message) {
  column.querySelector(".summary").textContent = message;
  column.querySelector(".items").replaceChildren();
}

function metricText(name) {
  const rep = representations.find((r) => r.name === name);
  const value = rep && rep.metrics[metric];
  return value === undefined ? "" : ` · test ${metric} ${value.toFixed(3)}`;
}

// ------------------------------------------------------------------ views
function strip(target, items) {
  target.replaceChildren(...items.map((item) => {
    const img = el("img", {src: imageUrl(item, 128), alt: item.title,
                           title: `${item.title} (item ${item.item_id})`, loading: "lazy"});
    img.addEventListener("click", () => show({item: item.item_id}));
    return img;
  }));
  if (!items.length) target.append(el("span", {className: "empty", textContent: "none"}));
}

async function showHeader(token) {
  const section = $("#user-section");
  if (view.user !== undefined) {
    const user = await api(`/users/${view.user}?limit=200`);
    if (token !== generation) return;
    $("#user-input").value = idType() === "source" ? user.source_id : user.user_id;
    $("#user-title").textContent =
      `User ${user.user_id} (${user.source_id}): ${user.n_history} history items, ` +
      `${user.n_test} test items`;
    strip($("#history"), user.history);
    strip($("#test"), user.test);
    $("#test-block").hidden = false;
    section.hidden = false;
  } else if (view.item !== undefined) {
    const item = await api(`/items/${view.item}`);
    if (token !== generation) return;
    $("#user-title").textContent = `Items like #${item.item_id}: ${item.title}`;
    strip($("#history"), [item]);
    $("#test-block").hidden = true;
    section.hidden = false;
  } else {
    section.hidden = true;
  }
}

async function fillSide(i, token = generation) {
  const column = columns[i];
  const name = selectOf(i).value;
  const rep = encodeURIComponent(name);
  const current = () => token === generation && selectOf(i).value === name;
  try {
    if (view.user !== undefined) {
      const r = await api(`/users/${view.user}/recommendations?k=${k()}&representation=${rep}`);
      if (!current()) return;
      const hits = r.n_hits === null ? ""
        : ` · ${r.n_hits} of ${r.n_test} test items in the top ${r.k}`;
      fillColumn(column, r.items, `${name}${hits}${metricText(name)}`, r.explanation);
    } else if (view.q !== undefined) {
      const r = await api(`/search?q=${encodeURIComponent(view.q)}&k=${k()}&representation=${rep}`);
      if (!current()) return;
      fillColumn(column, r.items, `${name}: nearest texts to “${view.q}”`, "");
    } else if (view.item !== undefined) {
      const r = await api(`/items/${view.item}/similar?k=${k()}&representation=${rep}`);
      if (!current()) return;
      fillColumn(column, r.items, `${name}: nearest items`, "");
    }
  } catch (err) {
    if (current()) columnError(column, `${name}: ${err.message}`);
  }
}

async function show(newView) {
  view = newView;
  const token = ++generation;
  writeHash();
  setStatus("loading…");
  try {
    await showHeader(token);
    await Promise.all([0, 1].map((i) => fillSide(i, token)));
    if (token !== generation) return;
    const what = view.user !== undefined ? `user ${view.user}`
      : view.q !== undefined ? `search “${view.q}”` : `items like #${view.item}`;
    setStatus(`Showing ${what}. Hover a recommendation to see why it was recommended.`);
  } catch (err) {
    if (token === generation) setStatus(err.message, true);
  }
}

// ------------------------------------------------------------------ controls
// Typed ids are original ids (ASINs, user names, movie ids) or the run's 0-based ids,
// as the id-type select says; the server resolves them (?id_type=source).
function idType() {
  return $("#id-type").value;
}

async function resolveUser(text) {
  text = text.trim();
  if (!text) throw new Error("type a user id");
  if (idType() === "source") {
    const exact = await api(`/users/${encodeURIComponent(text)}?id_type=source&limit=0`)
      .catch(() => null);
    if (exact) return exact.user_id;
    const matches = await api(`/users?q=${encodeURIComponent(text)}&limit=1`);
    if (!matches.length) throw new Error(`no user matches “${text}”`);
    return matches[0].user_id;
  }
  return (await api(`/users/${encodeURIComponent(text)}?limit=0`)).user_id;
}

async function resolveItem(text) {
  text = text.trim();
  if (!text) throw new Error("type an item id");
  return (await api(`/items/${encodeURIComponent(text)}?id_type=${idType()}`)).item_id;
}

let suggestTimer = null;
function suggestUsers() {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(async () => {
    const q = $("#user-input").value.trim();
    const users = await api(`/users?q=${encodeURIComponent(q)}&limit=20`).catch(() => []);
    const source = idType() === "source";
    $("#user-list").replaceChildren(...users.map((u) => el("option", {
      value: source ? u.source_id : String(u.user_id),
      label: `${source ? "run id " + u.user_id : u.source_id} · ${u.n_history} items`})));
  }, 150);
}

async function init() {
  const [health, reps] = await Promise.all([api("/health"), api("/representations")]);
  representations = reps.representations;
  metric = reps.metric;
  $("#run-info").textContent =
    `${health.workdir} · ${health.n_items.toLocaleString()} items · ` +
    `${health.n_users.toLocaleString()} users · ${representations.length} representations`;
  for (const [i, select] of [0, 1].map((i) => [i, selectOf(i)])) {
    select.replaceChildren(...representations.map((r) => el("option", {
      value: r.name, textContent: r.name + (r.searchable ? "  (text)" : "")})));
    // the two best by the report metric (reps.ranked), until the URL names others
    select.value = reps.ranked[Math.min(i, reps.ranked.length - 1)];
    select.addEventListener("change", () => {
      writeHash();
      if (view) fillSide(i);
    });
  }
  $("#k").addEventListener("change", () => view && show(view));
  $("#user-input").addEventListener("input", suggestUsers);
  // a typed id opens its view once the server has resolved it
  const onTyped = (form, input, resolve, key) => $(form).addEventListener("submit",
    async (event) => {
      event.preventDefault();
      try {
        show({[key]: await resolve($(input).value)});
      } catch (err) {
        setStatus(err.message, true);
      }
    });
  onTyped("#user-form", "#user-input", resolveUser, "user");
  onTyped("#item-form", "#item-input", resolveItem, "item");
  $("#random-user").addEventListener("click", showRandomUser);
  $("#id-type").addEventListener("change", suggestUsers);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("#search-input").value.trim();
    if (q) show({q});
  });
  suggestUsers();
  const initial = readHash();
  if (initial) {
    if (initial.q !== undefined) $("#search-input").value = initial.q;
    show(initial);
  } else {
    await showRandomUser(); // never open on a blank page
  }
}

async function showRandomUser() {
  const user = await api("/users/random");
  show({user: user.user_id});
}

init().catch((err) => setStatus(`cannot reach the server: ${err.message}`, true));
