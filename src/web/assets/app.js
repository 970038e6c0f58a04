// micro web: live services list, node probes, call form and event console. No dependencies.
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

async function postJson(url, body) {
  const started = performance.now();
  const rsp = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  let data = null;
  try { data = await rsp.json(); } catch (_) { data = null; }
  return { status: rsp.status, ok: rsp.ok, data, ms: performance.now() - started };
}

// ---- services list: rows change as the registry does ----
function servicesPage(table) {
  const tbody = table.tBodies[0];
  const status = document.getElementById("live-status");
  const empty = document.getElementById("empty");
  const rows = new Map();
  const health = new Map(); // service -> {ok, total, failing}
  for (const tr of tbody.rows) rows.set(tr.dataset.service, JSON.parse(tr.dataset.versions || "{}"));

  function healthCell(name) {
    const h = health.get(name);
    if (!h) return el("td", { class: "health" }, el("span", { class: "muted" }, "checking…"));
    const text = h.ok === h.total ? `ok (${h.ok}/${h.total})` : `${h.total - h.ok} of ${h.total} failing`;
    const why = h.failing.map(([node, what]) => `${node}: ${what}`).join("\n");
    return el("td", { class: "health" }, el("span", { class: h.ok === h.total ? "good" : "bad", title: why }, text));
  }

  async function refreshHealth() {
    try {
      const rsp = await fetch("/api/health");
      if (rsp.ok) {
        health.clear();
        for (const [name, h] of Object.entries(await rsp.json())) health.set(name, h);
        for (const tr of tbody.rows) tr.querySelector("td.health")?.replaceWith(healthCell(tr.dataset.service));
      }
    } finally {
      setTimeout(refreshHealth, 5000);
    }
  }
  refreshHealth();

  function render(name) {
    const versions = rows.get(name);
    let tr = tbody.querySelector(`tr[data-service="${CSS.escape(name)}"]`);
    const count = versions ? Object.values(versions).reduce((n, ids) => n + ids.length, 0) : 0;
    if (!versions || count === 0) {
      rows.delete(name);
      if (tr) tr.remove();
    } else {
      if (!tr) {
        tr = el("tr", { "data-service": name });
        const after = [...tbody.rows].find((r) => r.dataset.service > name);
        tbody.insertBefore(tr, after || null);
      }
      tr.dataset.versions = JSON.stringify(versions);
      tr.replaceChildren(
        el("th", { scope: "row" }, el("a", { href: "/service/" + name }, name)),
        el("td", { class: "versions" }, Object.keys(versions).sort().join(", ")),
        el("td", { class: "nodes" }, String(count)),
        healthCell(name),
      );
    }
    table.hidden = rows.size === 0;
    empty.hidden = rows.size !== 0;
  }

  function apply(c) {
    const versions = rows.get(c.service) || {};
    for (const v of Object.keys(versions)) {
      versions[v] = versions[v].filter((id) => id !== c.node);
      if (versions[v].length === 0) delete versions[v];
    }
    if (c.action !== "removed") (versions[c.version] = versions[c.version] || []).push(c.node);
    rows.set(c.service, versions);
    render(c.service);
  }

  async function resync() {
    const rsp = await fetch("/api/services");
    if (!rsp.ok) return;
    const names = new Set(rows.keys());
    for (const s of await rsp.json()) { rows.set(s.name, s.versions); names.add(s.name); }
    for (const n of names) render(n);
  }

  let opened = false;
  const source = new EventSource("/live/registry");
  source.onopen = () => {
    status.textContent = "Live updates: on";
    document.body.dataset.live = "on";
    if (opened) resync(); // changes may have been missed while reconnecting
    opened = true;
  };
  source.onerror = () => { status.textContent = "Live updates: reconnecting…"; document.body.dataset.live = "off"; };
  source.onmessage = (m) => apply(JSON.parse(m.data));
}

// ---- service page: nodes with their health and stats, refreshed ----
function human(secs) {
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + (secs % 60) + "s";
  return Math.floor(secs / 3600) + "h" + Math.floor((secs % 3600) / 60) + "m";
}
function bytes(b) {
  if (!b) return "-";
  return b < 1048576 ? (b >> 10) + " KiB" : (b / 1048576).toFixed(1) + " MiB";
}

function nodesTable(table) {
  const status = document.getElementById("nodes-status");
  async function refresh() {
    try {
      const rsp = await fetch("/api/nodes/" + encodeURIComponent(table.dataset.service));
      const nodes = await rsp.json();
      if (!rsp.ok) throw new Error(nodes.detail || rsp.status);
      const keep = table.tBodies[0];
      const rows = nodes.map((n) => {
        const old = keep.querySelector(`tr[data-node="${CSS.escape(n.id)}"]`);
        const meta = old ? old.cells[3].cloneNode(true) : el("td", {}, "");
        const h = n.health.ok ? n.health.ok.status : "error";
        const healthCell = el("td", { class: "health " + (h === "ok" ? "ok" : "bad") }, n.health.ok ? h : "error: " + n.health.error);
        const s = n.stats.ok;
        const cells = s
          ? [human(s.uptime), s.requests, s.errors, s.panics, s.restarts, s.in_flight, bytes(s.memory)].map((v) => el("td", {}, String(v)))
          : [el("td", { colspan: "7", class: "bad" }, "error: " + n.stats.error)];
        return el("tr", { "data-node": n.id }, el("th", { scope: "row" }, el("code", {}, n.id)), el("td", {}, n.version),
          el("td", {}, el("code", {}, n.address)), meta, healthCell, ...cells);
      });
      keep.replaceChildren(...rows);
      const subs = document.getElementById("subscriptions");
      if (subs) {
        const subRows = nodes.flatMap((n) => ((n.stats.ok && n.stats.ok.subscriptions) || []).map((x) =>
          el("tr", {}, el("td", {}, el("code", {}, n.id)), el("td", {}, el("code", {}, x.topic)),
            el("td", {}, x.group || "(broadcast)"), el("td", {}, x.durable ? "yes" : "no"),
            ...[x.handled, x.errors, x.retries, x.dead_letters, x.pending == null ? "-" : x.pending].map((v) => el("td", {}, String(v))))));
        subs.tBodies[0].replaceChildren(...(subRows.length ? subRows : [el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No subscriptions."))]));
      }
      const healthy = nodes.filter((n) => n.health.ok && n.health.ok.status === "ok").length;
      status.textContent = `${healthy} of ${nodes.length} node(s) healthy · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      status.textContent = "Cannot ask the nodes: " + e.message;
    }
  }
  refresh();
  setInterval(refresh, 3000);
}

// ---- call form: pre-filled with the last call of each endpoint ----
function callForm(form) {
  const $ = (id) => document.getElementById(id);
  const service = form.dataset.service;
  const key = () => `micro-web:call:${service}:${$("call-endpoint").value}`;
  function restore() {
    const last = JSON.parse(localStorage.getItem(key()) || "null");
    if (last) { $("call-request").value = last.request; $("call-metadata").value = last.metadata; }
  }
  $("call-endpoint").addEventListener("change", restore);
  restore();
  for (const b of document.querySelectorAll("button.pick")) {
    b.addEventListener("click", () => {
      $("call-endpoint").value = b.dataset.endpoint;
      restore();
      $("call-request").focus();
    });
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      service, endpoint: $("call-endpoint").value, request: $("call-request").value,
      metadata: $("call-metadata").value, timeout_ms: Number($("call-timeout").value) || null,
      version: $("call-version").value, node: $("call-node").value,
    };
    localStorage.setItem(key(), JSON.stringify({ request: body.request, metadata: body.metadata }));
    const status = $("call-status"), out = $("call-output");
    status.textContent = "Calling…"; status.className = ""; out.textContent = "";
    try {
      const r = await postJson("/api/call", body);
      const ms = (r.data && r.data.latency_ms != null ? r.data.latency_ms : r.ms).toFixed(1);
      if (r.ok) {
        status.textContent = `OK in ${ms} ms`; status.className = "ok";
        out.textContent = JSON.stringify(r.data.reply, null, 2);
      } else {
        const e = (r.data && (r.data.error || r.data)) || { code: r.status, detail: "no details" };
        status.textContent = `Error ${e.code} ${e.status || ""} in ${ms} ms: ${e.detail}`; status.className = "bad";
        out.textContent = JSON.stringify(e, null, 2);
      }
    } catch (e) {
      status.textContent = "The dashboard did not answer: " + e.message; status.className = "bad";
    }
  });
}

// ---- event console ----
function consolePage() {
  const $ = (id) => document.getElementById(id);
  $("publish-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = $("publish-status");
    const r = await postJson("/api/publish", {
      topic: $("publish-topic").value, body: $("publish-body").value,
      metadata: $("publish-metadata").value, durable: $("publish-durable").checked,
    });
    if (r.ok) { status.textContent = `Published ${r.data.id} on ${r.data.topic}${r.data.stored ? " (stored)" : ""}`; status.className = "ok"; }
    else { status.textContent = `Error ${r.data ? r.data.code + ": " + r.data.detail : r.status}`; status.className = "bad"; }
  });
  let source = null;
  $("subscribe-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (source) source.close();
    const topic = $("subscribe-topic").value.trim();
    const status = $("subscribe-status");
    status.textContent = `Subscribing to ${topic}…`;
    document.body.dataset.subscribed = "";
    source = new EventSource("/live/events?topic=" + encodeURIComponent(topic));
    source.onopen = () => { status.textContent = `Subscribed to ${topic}`; document.body.dataset.subscribed = topic; };
    source.onerror = () => { status.textContent = `Subscription to ${topic} failed or dropped (is the pattern valid?)`; };
    source.onmessage = (m) => {
      const e = JSON.parse(m.data);
      const headers = el("ul", { class: "pairs" },
        el("li", {}, el("code", {}, "id"), " = " + e.id),
        el("li", {}, el("code", {}, "publisher"), " = " + (e.publisher || "-")),
        el("li", {}, el("code", {}, "time"), " = " + new Date(e.timestamp).toISOString()),
        ...Object.entries(e.metadata).map(([k, v]) => el("li", {}, el("code", {}, k), " = " + v)));
      const item = el("li", { class: "event" }, el("strong", {}, e.topic), headers,
        el("pre", {}, e.error ? e.error : JSON.stringify(e.data, null, 2)));
      $("events").prepend(item);
    };
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const services = document.getElementById("services");
  if (services) servicesPage(services);
  const nodes = document.getElementById("nodes");
  if (nodes) nodesTable(nodes);
  const call = document.getElementById("call-form");
  if (call) callForm(call);
  if (document.getElementById("publish-form")) consolePage();
});
