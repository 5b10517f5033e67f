// hako's web console: the VM list (polled from GET /v1/vms), lifecycle buttons,
// and one VM's serial console in xterm.js over GET /v1/vms/NAME/console (a
// WebSocket; ?mode=rw asks to type). `window.hako` exposes the state for tests.
"use strict";

const hako = {
  vms: [],
  vm: null,         // the VM whose console is open
  mode: null,       // "rw" or "ro", from the server's hello
  state: null,      // that VM's state, from the console's messages
  socket: null,
  term: null,
  fit: null,
  // The terminal's text: every line of its buffer, scrollback included.
  text() {
    if (!this.term) return "";
    const b = this.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) {
      const l = b.getLine(i);
      if (l) lines.push(l.translateToString(true));
    }
    return lines.join("\n");
  },
};
window.hako = hako;

const $ = (id) => document.getElementById(id);

function mib(bytes) {
  if (bytes >= 1 << 30 && bytes % (1 << 30) === 0) return bytes / (1 << 30) + " GiB";
  return Math.round(bytes / (1 << 20)) + " MiB";
}

function uptime(s) {
  if (s === null || s === undefined) return "";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
}

function say(text) { $("message").textContent = text || ""; }

async function act(name, action) {
  say("");
  try {
    const r = await fetch(`/v1/vms/${encodeURIComponent(name)}/${action}`, { method: "PUT" });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      say(`${action} ${name}: ${body.error || r.status}`);
    }
  } catch (e) {
    say(`${action} ${name}: ${e}`);
  }
  refresh();
}

function button(vm, action, label, enabled) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.vm = vm;
  b.dataset.action = action;
  b.disabled = !enabled;
  b.addEventListener("click", () => action === "console" ? openConsole(vm) : act(vm, action));
  return b;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function render() {
  const body = $("vms").querySelector("tbody");
  body.textContent = "";
  for (const v of hako.vms) {
    const tr = document.createElement("tr");
    tr.dataset.vm = v.name;
    cell(tr, v.name);
    const st = cell(tr, v.state, "state-" + v.state);
    if (v.note) st.title = v.note;
    cell(tr, String(v.vcpus), "num");
    cell(tr, mib(v.memory_bytes), "num");
    cell(tr, uptime(v.uptime_s), "num");
    const td = cell(tr, "", "actions");
    const up = v.state === "running" || v.state === "paused";
    td.appendChild(button(v.name, "start", "start", !up));
    td.appendChild(button(v.name, "shutdown", "shutdown", v.state === "running"));
    td.appendChild(button(v.name, "destroy", "destroy", up));
    td.appendChild(button(v.name, "console", "console", true));
    body.appendChild(tr);
  }
}

async function refresh() {
  try {
    const r = await fetch("/v1/vms");
    if (!r.ok) throw new Error("HTTP " + r.status);
    hako.vms = await r.json();
    $("daemon-state").textContent = `${hako.vms.length} VM(s)`;
    render();
  } catch (e) {
    $("daemon-state").textContent = "the daemon does not answer: " + e.message;
  }
}

function closeConsole() {
  if (hako.socket) hako.socket.close();
  hako.socket = null;
  if (hako.term) hako.term.dispose();
  hako.term = null;
  hako.vm = hako.mode = hako.state = null;
  $("console").hidden = true;
}

function openConsole(name) {
  closeConsole();
  $("console").hidden = false;
  $("console-vm").textContent = name;
  $("console-mode").textContent = "connecting…";
  $("console-note").textContent = "";
  // convertEol: the daemon's own "[hakod]" lines end in a bare "\n".
  const term = new Terminal({ convertEol: true, scrollback: 5000, fontSize: 14 });
  hako.term = term;
  hako.vm = name;
  if (window.FitAddon) {
    hako.fit = new FitAddon.FitAddon();
    term.loadAddon(hako.fit);
  }
  term.open($("terminal"));
  if (hako.fit) hako.fit.fit();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/vms/${encodeURIComponent(name)}/console?mode=rw`);
  ws.binaryType = "arraybuffer";
  hako.socket = ws;
  const enc = new TextEncoder();
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "hello") {
      hako.mode = m.mode;
      hako.state = m.state;
      $("console-mode").textContent = m.mode === "rw" ? "typing" : "read-only";
      if (m.reason) $("console-note").textContent = m.reason;
    } else if (m.type === "state") {
      hako.state = m.state;
    } else if (m.type === "notice") {
      $("console-note").textContent = m.message;
    }
  };
  ws.onclose = () => {
    if (hako.socket === ws) $("console-mode").textContent = "disconnected";
  };
  term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
  });
  term.focus();
}

$("console-close").addEventListener("click", closeConsole);
window.addEventListener("resize", () => { if (hako.fit) hako.fit.fit(); });
refresh();
setInterval(refresh, 1000);
