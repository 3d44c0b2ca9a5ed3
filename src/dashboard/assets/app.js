// samocode dashboard: live updates as an enhancement. Every page reads and acts without this
// file; with it, the fleet table and the session page follow the daemon through server-sent
// events. Server HTML arrives already escaped; log lines are inserted as text.
"use strict";

(function () {
  const body = document.body;
  const source = body.dataset.events;
  const live = document.getElementById("live");

  // Ages ("5m") follow the clock between updates.
  function ago(then) {
    const s = Math.max(0, Math.floor((Date.now() - then) / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  function refreshAges(root) {
    root.querySelectorAll("time[data-age]").forEach(function (t) {
      const then = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(then)) t.textContent = ago(then);
    });
  }
  setInterval(function () { refreshAges(document); }, 15000);

  // A form is sent once: a second click while the first is on its way would be refused by
  // the daemon, and its refusal would be the only message shown.
  document.addEventListener("submit", function (e) {
    const form = e.target;
    if (form.dataset.sent) { e.preventDefault(); return; }
    form.dataset.sent = "1";
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
  });

  if (!source || !window.EventSource) return;

  // The page's own filter (from its address) decides which live rows show.
  const params = new URLSearchParams(location.search);
  function matches(row) {
    const state = params.get("state") || "";
    const project = params.get("project") || "";
    const q = (params.get("q") || "").trim();
    const stateOk = !state || (state === "active" ? row.dataset.state !== "done" : row.dataset.state === state);
    return stateOk && (!project || row.dataset.project === project || row.dataset.projectName === project) && (!q || row.dataset.name.indexOf(q) >= 0);
  }
  function fromHtml(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function onFleet(event) {
    // Where the fleet stream is: a new connection asks only for what came after it.
    if (event.lastEventId) body.dataset.since = event.lastEventId;
    const data = JSON.parse(event.data);
    const tbody = document.getElementById("fleet-rows");
    if (!tbody) return;
    if (data.reset) tbody.textContent = "";
    data.rows.forEach(function (r) {
      // A template parses a lone <tr> as a row.
      const fresh = fromHtml(r.html);
      if (!fresh) return;
      fresh.hidden = !matches(fresh);
      const old = document.getElementById(r.id);
      if (old) old.replaceWith(fresh); else tbody.appendChild(fresh);
    });
    data.removed.forEach(function (id) {
      const old = document.getElementById(id);
      if (old) old.remove();
    });
    const summary = document.getElementById("summary");
    if (summary && data.summary) summary.replaceWith(fromHtml(data.summary));
    const empty = document.getElementById("empty");
    if (empty && tbody.children.length) empty.remove();
  }

  // A section the person is typing in, or has typed in, is left alone until they submit.
  document.addEventListener("input", function (e) {
    const section = e.target.closest && e.target.closest("section");
    if (section) section.dataset.dirty = "1";
  });
  function onSections(event) {
    JSON.parse(event.data).sections.forEach(function (s) {
      const old = document.getElementById(s.id);
      if (!old || old.dataset.v === s.v) return;
      if (old.dataset.dirty || old.contains(document.activeElement) && document.activeElement.matches("input,textarea,select")) return;
      old.replaceWith(fromHtml(s.html));
    });
    refreshAges(document);
  }

  function onLog(event) {
    const data = JSON.parse(event.data);
    const list = document.getElementById("log-lines");
    const name = document.getElementById("log-file");
    if (!list) return;
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    if (data.reset) list.textContent = "";
    data.entries.forEach(function (text) {
      const li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    });
    while (list.children.length > 400) list.firstElementChild.remove();
    list.dataset.file = data.file;
    list.dataset.end = data.end;
    if (name) name.textContent = data.file;
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  // The stream's address says what the page holds: the log's file and end, and the versions
  // of its sections, so that only what differs is sent. It is made afresh at each connection
  // (the browser's own reconnection would repeat what the page held when it loaded).
  function address() {
    const url = new URL(source, location.href);
    if (body.dataset.since) url.searchParams.set("since", body.dataset.since);
    const log = document.getElementById("log-lines");
    if (log && log.dataset.file) {
      url.searchParams.set("file", log.dataset.file);
      url.searchParams.set("end", log.dataset.end);
    }
    const held = Array.from(document.querySelectorAll("section[data-v]"))
      .map(function (s) { return s.id + ":" + s.dataset.v; });
    if (held.length) url.searchParams.set("v", held.join(","));
    return url.pathname + url.search;
  }
  const offline = document.getElementById("offline");
  function connect() {
    const events = new EventSource(address());
    events.addEventListener("open", function () { if (live) live.hidden = false; });
    events.addEventListener("error", function () {
      if (live) live.hidden = true;
      if (events.readyState === EventSource.CLOSED) {
        // The browser gives up for good on an answer that is no stream (401 after a restart).
        if (offline) offline.hidden = false;
        return;
      }
      // A dropped connection: connect again, saying what the page holds now.
      events.close();
      setTimeout(connect, 2000);
    });
    events.addEventListener("fleet", onFleet);
    events.addEventListener("sections", onSections);
    events.addEventListener("log", onLog);
  }
  connect();
})();
