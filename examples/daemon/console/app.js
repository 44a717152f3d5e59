// holdfast web console: plain browser JavaScript (no build step), served by the daemon at /.
// The token is kept in sessionStorage and sent as a bearer token; every call goes to the daemon that
// served this page, which proxies to the other nodes (/api/v1/nodes/:id/...).
/* global document, sessionStorage, fetch, setTimeout, clearTimeout, console, Node */

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const COMMANDS = {
  farm: ["start", "stop", "restart", "forcestop"],
  mirror: ["start", "stop", "restart", "swap", "prim", "second", "forcestop"],
};

let token = sessionStorage.getItem("holdfast.token") || "";
let last = null; // last state
let peerStates = {}; // node id -> state as that node reports it (details, full reasons)
let timer = null;
let tick = 0;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}


async function api(method, path) {
  const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
  if (res.status === 401) {
    signOut("the token was refused (401): sign in again");
    throw new Error("401");
  }
  const type = res.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(typeof body === "object" && body.error ? body.error : `${res.status} ${body}`);
  return body;
}

function signOut(message) {
  token = "";
  sessionStorage.removeItem("holdfast.token");
  clearTimeout(timer);
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function signIn(t) {
  token = t;
  try {
    await api("GET", "/api/v1/state");
  } catch (e) {
    if (e.message !== "401") $("login-error").textContent = e.message;
    return;
  }
  sessionStorage.setItem("holdfast.token", token);
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  poll();
}

async function poll() {
  clearTimeout(timer);
  try {
    last = await api("GET", "/api/v1/state");
    if (tick++ % 3 === 0) await refreshPeers();
    render();
    await refreshLog();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e.message === "401") return;
    $("updated").textContent = `update failed: ${e.message}`;
  }
  if (token) timer = setTimeout(poll, POLL_MS);
}

async function refreshPeers() {
  const out = {};
  await Promise.all(
    last.nodes.filter((n) => n.up && !n.self).map(async (n) => {
      try {
        out[n.id] = await api("GET", `/api/v1/nodes/${encodeURIComponent(n.id)}/state`);
      } catch {
        /* the heartbeat view is still shown */
      }
    }),
  );
  peerStates = out;
}

/** The best known view of (node, module): the node's own answer if we have it, else heartbeats. */
function moduleOn(node, name) {
  const own = peerStates[node.id]?.nodes.find((n) => n.self)?.modules[name];
  const hb = node.modules[name];
  return own && hb && own.state === hb.state && own.transient === hb.transient ? { ...hb, ...own } : hb;
}

function render() {
  $("cluster").textContent = `cluster ${last.cluster} · via ${last.node}`;
  $("view").textContent = `view #${last.view.epoch} [${last.view.members.join(", ")}]${last.view.agreed ? "" : " (not agreed yet)"}`;
  const grid = $("grid");
  grid.replaceChildren(
    el("tr", {}, el("th", {}, "module"), last.nodes.map((n) => el("th", {}, n.id, n.up ? "" : el("span", { class: "down" }, " (down)")))),
    ...last.modules.map((m) =>
      el(
        "tr",
        { "data-module": m.name },
        el("th", {}, m.name, el("div", { class: "muted" }, m.kind, m.vips.length ? ` · ${m.vips.join(", ")}` : "")),
        last.nodes.map((n) => cell(n, m)),
      ),
    ),
  );
  renderDetails();
  const sel = $("log-module");
  const names = last.modules.map((m) => m.name);
  if ([...sel.options].map((o) => o.value).join() !== names.join()) sel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  const nsel = $("log-node");
  const ids = last.nodes.map((n) => n.id);
  if ([...nsel.options].map((o) => o.value).join() !== ids.join()) nsel.replaceChildren(...ids.map((n) => el("option", { value: n, selected: n === last.node }, n)));
}

function cell(node, m) {
  const s = moduleOn(node, m.name);
  if (!s) return el("td", { class: "cell muted" }, "—");
  const label = s.transient && s.next ? `${s.state} → ${s.next}` : s.state;
  const cls = `state s-${s.state}${s.transient ? " transient" : ""}${s.ready || s.transient ? "" : " not-ready"}`;
  return el(
    "td",
    { class: "cell", "data-node": node.id, "data-module": m.name, "data-state": s.state, "data-ready": String(s.ready), "data-transient": String(s.transient) },
    el("span", { class: cls, title: s.ready ? "ready" : s.transient ? "in transition" : "not ready" }, label),
    " ",
    el("span", { class: "muted" }, s.ready ? "ready" : s.transient ? "transient" : "not ready"),
    el("div", { class: "reason" }, s.reason || ""),
    replicationBar(s),
    node.up
      ? el(
          "div",
          { class: "buttons" },
          [...(COMMANDS[m.kind] || COMMANDS.mirror), ...(s.details && s.details.replication && s.details.replication.role === "primary" ? ["resync"] : [])].map((c) => el("button", { type: "button", "data-command": c, onclick: () => confirmCommand(node.id, m.name, c) }, c)),
        )
      : null,
  );
}

/** A mirror's replication on its cell: a bar (resync progress, full when in sync) and the state in words. */
function replicationBar(s) {
  const r = s.details && s.details.replication;
  if (!r || !r.role) return null;
  const pct = typeof r.percent === "number" ? Math.max(0, Math.min(100, r.percent)) : null;
  const rs = r.resync;
  const label =
    rs && rs.active
      ? `resync (${rs.mode}) ${pct === null ? "" : `${pct.toFixed(0)}%`} · ${fmtBytes(rs.bytes)} of ${fmtBytes(rs.totalBytes)}`
      : `replication: ${r.state}${pct !== null && r.state !== "sync" && r.state !== "in sync" ? ` ${pct.toFixed(0)}%` : ""}`;
  return el(
    "div",
    { class: "repl", "data-replication": r.state, "data-percent": pct === null ? "" : String(pct) },
    pct === null ? "" : el("span", { class: "progress", title: `${pct.toFixed(1)}%` }, el("div", { style: `width: ${pct}%` })),
    " ",
    el("span", { class: "muted" }, label),
  );
}

function fmtBytes(n) {
  if (typeof n !== "number") return "?";
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

function renderDetails() {
  const body = $("details-body");
  const rows = [];
  for (const m of last.modules) {
    for (const n of last.nodes) {
      const own = n.self ? n.modules[m.name] : peerStates[n.id]?.nodes.find((x) => x.self)?.modules[m.name];
      const d = own?.details;
      if (!d) continue;
      if (d.replication) {
        const r = d.replication;
        const pct = typeof r.percent === "number" ? Math.max(0, Math.min(100, r.percent)) : null;
        rows.push(
          el("div", {}, el("b", {}, `${m.name} on ${n.id}: replication `), r.state || "", " ",
            pct === null ? "" : el("progress", { max: 100, value: pct }), pct === null ? "" : ` ${pct.toFixed(1)}%`,
            r.bytes !== undefined ? el("span", { class: "muted" }, ` ${fmtBytes(r.bytes)} replicated`) : "",
            r.ackLatencyAvgUs !== undefined ? el("span", { class: "muted" }, ` · ack ${(r.ackLatencyAvgUs / 1000).toFixed(2)} ms (max ${(r.ackLatencyMaxUs / 1000).toFixed(2)})`) : "",
            r.queueDepth !== undefined ? el("span", { class: "muted" }, ` · queue ${r.queueDepth}`) : "",
            r.resync ? el("span", { class: "muted" }, ` · last resync ${r.resync.mode}: ${r.resync.active ? `${r.resync.percent.toFixed(1)}%` : `${fmtBytes(r.resync.sentBytes)} sent in ${r.resync.durationMs} ms`}`) : ""),
        );
      }
      if (d.buckets && Array.isArray(d.buckets.owned)) {
        const total = d.buckets.total || 256;
        const own = new Set(d.buckets.owned);
        rows.push(
          el("div", {}, el("b", {}, `${m.name} on ${n.id}: ${own.size} of ${total} buckets`),
            el("div", { class: "buckets" }, Array.from({ length: total }, (_, i) => el("span", { class: own.has(i) ? "own" : "", title: `bucket ${i}` })))),
        );
      }
    }
  }
  body.replaceChildren(...(rows.length ? rows : [el("p", { class: "muted" }, "No module exposes replication progress or a farm bucket map yet (mirror and farm modules fill this in).")]));
}

async function refreshLog() {
  const m = $("log-module").value;
  const n = $("log-node").value || last.node;
  if (!m) return;
  const path = n === last.node ? `/api/v1/modules/${encodeURIComponent(m)}/logs?n=100&format=text` : `/api/v1/nodes/${encodeURIComponent(n)}/modules/${encodeURIComponent(m)}/logs?n=100&format=text`;
  try {
    const text = await api("GET", path);
    const pre = $("log");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (pre.textContent !== text) {
      pre.textContent = text;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    $("log").textContent = `log not available: ${e.message}`;
  }
}

function confirmCommand(nodeId, module, command) {
  const dlg = $("confirm");
  $("confirm-text").textContent = `Run "${command}" on module ${module}, node ${nodeId}?`;
  $("force-label").hidden = command !== "prim";
  $("force").checked = false;
  dlg.returnValue = "";
  dlg.onclose = async () => {
    if (dlg.returnValue !== "ok") return;
    const force = command === "prim" && $("force").checked ? "?force=1" : "";
    const path = `/api/v1/nodes/${encodeURIComponent(nodeId)}/modules/${encodeURIComponent(module)}/commands/${command}${force}`;
    const out = $("command-result");
    out.className = "";
    out.textContent = `${command} ${module} on ${nodeId}…`;
    try {
      const r = await api("POST", path);
      out.textContent = `${command} ${module} on ${nodeId}: accepted, now ${r.state}${r.transient && r.next ? ` → ${r.next}` : ""}`;
    } catch (e) {
      out.className = "error";
      out.textContent = `${command} ${module} on ${nodeId}: refused: ${e.message}`;
    }
    poll();
  };
  dlg.showModal();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void signIn($("token").value.trim());
});
$("logout").addEventListener("click", () => signOut(""));
$("log-module").addEventListener("change", () => void refreshLog());
$("log-node").addEventListener("change", () => void refreshLog());

if (token) void signIn(token);
else signOut("");
console.info("holdfast console loaded");
