// NetServ's web view: reads the controller's REST API every second and draws what it
// says. Read-only: it only sends GETs. Sessions need a token (docs/security.md): typed
// into the form, or given once as the address's fragment (#token=...), which browsers
// never send to a server; it is kept in this tab's sessionStorage and taken out of
// the address. Every text from the network goes in through textContent, never as HTML.
"use strict";

const POLL_MS = 1000;
const MAX_STATS = 20; // sessions whose counters are read each round
const SVG = "http://www.w3.org/2000/svg";
let polls = 0;

function token() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("netserv-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("netserv-token");
}

async function get(path, needsToken) {
  const headers = {};
  const held = token();
  if (needsToken && held) headers.Authorization = "Bearer " + held;
  const answer = await fetch(path, { headers, cache: "no-store" });
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    throw Object.assign(new Error(body.error || answer.statusText), { status: answer.status });
  }
  return answer.json();
}

function el(name, attrs, text) {
  const node = name.startsWith("svg:")
    ? document.createElementNS(SVG, name.slice(4))
    : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", attrs);
  for (const cell of cells) {
    const td = typeof cell === "object" && cell !== null ? el("td", cell.attrs, cell.text) : el("td", {}, cell);
    tr.append(td);
  }
  return tr;
}

function count(value, name) {
  return { text: value === undefined || value === null ? "–" : value, attrs: { class: "count " + name } };
}

function matchText(match) {
  return Object.entries(match).map(([k, v]) => k + "=" + v).join(" ");
}

function drawTopology(topology, nodes) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const switches = topology.switches.map((s) => s.dpid).sort();
  const width = svg.clientWidth || 800;
  const step = width / (switches.length + 1);
  const at = {};
  switches.forEach((dpid, i) => (at[dpid] = { x: step * (i + 1), y: 80 }));
  for (const link of topology.links) {
    const a = at[link.src.dpid], b = at[link.dst.dpid];
    if (a && b) svg.append(el("svg:line", { class: "link", x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
  }
  const ready = Object.fromEntries(nodes.map((n) => [n.dpid, n.ready]));
  const total = {}, placed = {};
  for (const host of topology.hosts) total[host.dpid] = (total[host.dpid] || 0) + 1;
  for (const host of topology.hosts) {
    const base = at[host.dpid];
    if (!base) continue;
    const n = (placed[host.dpid] = (placed[host.dpid] || 0) + 1);
    const gap = Math.min(90, step / total[host.dpid]);
    const x = base.x + (n - (total[host.dpid] + 1) / 2) * gap, y = 190;
    svg.append(el("svg:line", { class: "edge", x1: base.x, y1: base.y, x2: x, y2: y }));
    svg.append(el("svg:rect", { class: "host", x: x - 20, y: y - 10, width: 40, height: 20 }));
    svg.append(el("svg:text", { x, y: y + 26 }, host.ipv4.join(" ") || host.mac));
  }
  for (const dpid of switches) {
    const { x, y } = at[dpid];
    const kind = ready[dpid] ? "switch netserv" : "switch";
    svg.append(el("svg:circle", { class: kind, cx: x, cy: y, r: 18, "data-dpid": dpid }));
    svg.append(el("svg:text", { x, y: y - 26 }, "s" + parseInt(dpid, 16) + (ready[dpid] ? " (NetServ)" : "")));
  }
}

function drawNodes(nodes, sessions) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const node of nodes) {
    const mine = sessions.filter((s) => s.node === node.dpid);
    const modules = [...new Set(mine.flatMap((s) => s.modules.map((m) => m.name)))].sort();
    const agent = node.agent;
    body.append(
      row(
        [
          node.dpid,
          node.connected ? "connected" : { text: "disconnected", attrs: { class: "down" } },
          agent ? (agent.alive ? agent.url : { text: "down", attrs: { class: "down" } }) : "none",
          agent ? agent.last_seen_ago.toFixed(1) + " s ago" : "–",
          modules.join(", ") || "–",
          mine.map((s) => s.id).join(", ") || "–",
        ],
        { "data-dpid": node.dpid },
      ),
    );
  }
}

function drawSessions(sessions, stats) {
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren();
  for (const s of sessions) {
    const st = (stats[s.id] || {}).stats || {};
    body.append(
      row(
        [
          s.id,
          s.state,
          s.node,
          { text: matchText(s.match), attrs: { class: "match" } },
          s.modules.map((m) => m.name).join(" → "),
          count(st.packets, "packets"),
          count(st.dropped, "dropped"),
          count(st.returned, "returned"),
          s.expires_in.toFixed(0) + " s",
        ],
        { "data-session": s.id },
      ),
    );
  }
}

function drawSignaling(signaling) {
  const body = document.querySelector("#signaling tbody");
  body.replaceChildren();
  const entries = Object.entries(signaling.counts);
  for (const [what, n] of entries) body.append(row([what, count(n, "signaling")]));
  if (!entries.length) body.append(row(["nothing came yet"]));
}

async function sessionsAndStats() {
  const note = document.getElementById("sessions-note");
  try {
    const sessions = await get("/netserv/sessions", true);
    const stats = {};
    await Promise.all(
      sessions.slice(0, MAX_STATS).map(async (s) => {
        stats[s.id] = await get("/netserv/sessions/" + s.id + "/stats", true).catch(() => ({}));
      }),
    );
    note.textContent = "";
    document.getElementById("login").hidden = true;
    return { sessions, stats };
  } catch (err) {
    if (err.status !== 401) throw err;
    note.textContent = "Sessions need a token: the operator's or a requester's.";
    document.getElementById("login").hidden = false;
    return { sessions: [], stats: {} };
  }
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const [topology, nodes, signaling, mine] = await Promise.all([
      get("/netserv/topology"),
      get("/netserv/nodes"),
      get("/netserv/signaling"),
      sessionsAndStats(),
    ]);
    drawTopology(topology, nodes);
    drawNodes(nodes, mine.sessions);
    drawSessions(mine.sessions, mine.stats);
    drawSignaling(signaling);
    polls += 1;
    status.dataset.polls = polls;
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.textContent = "the controller does not answer: " + err.message;
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("netserv-token", document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
});
token();
poll();
