// The live dashboard: asks for an API key, reads /api/v1/stats/stream with fetch() (an
// EventSource cannot send an Authorization header), draws the charts and tables; the latest
// tasks are latest.js's. The key lives in sessionStorage only (common.js) and never goes
// into a URL.
"use strict";

(function () {
  // Statuses and priorities come from the page (rendered from core/), never from a list here.
  const CONTRACT = TP.CONTRACT;
  const PRIORITIES = CONTRACT.priorities;
  const COLORS = Object.assign({total: "#333333"}, CONTRACT.colors);
  const STATUS_COLORS = CONTRACT.status_colors;
  // Every way a task can end other than success ("failed", "dead-lettered", "cancelled", ...).
  const UNSUCCESSFUL = CONTRACT.outcomes.filter((status) => status !== CONTRACT.success);
  const TEAM_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  const MAX_POINTS = 900;

  const $ = (id) => document.getElementById(id);
  let points = [];
  let charts = null;
  let controller = null;
  let reconnectTimer = null;
  let retryMs = 3000;

  // ---- page state -------------------------------------------------------------------

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showLogin(message) {
    stop();
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("scope").textContent = "";
    setConnection("idle", "not connected");
    $("key").focus();
  }

  function showBoard() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = false;
    if (!charts) charts = makeCharts();
  }

  function stop() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (controller) controller.abort();
    controller = null;
  }

  function scheduleReconnect(delay, text) {
    setConnection("waiting", text);
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
  }

  // ---- the stream -------------------------------------------------------------------

  async function connect() {
    stop();
    const key = TP.key();
    if (!key) {
      showLogin("");
      return;
    }
    const mine = new AbortController();
    controller = mine;
    setConnection("connecting", "connecting…");
    const url = "/api/v1/stats/stream?window=" + encodeURIComponent($("window").value);
    let response;
    try {
      response = await fetch(url, {
        headers: {Authorization: "Bearer " + key, Accept: "text/event-stream"},
        cache: "no-store",
        signal: mine.signal,
      });
    } catch (error) {
      if (!mine.signal.aborted) scheduleReconnect(5000, "cannot reach the API; retrying");
      return;
    }
    if (response.status === 401) {
      TP.forgetKey();
      showLogin("The API refused that key (401). Enter a valid key.");
      return;
    }
    if (!response.ok) {
      const message = await TP.errorMessage(response);
      scheduleReconnect(5000, response.status + ": " + message + " (retrying)");
      return;
    }
    showBoard();
    setConnection("live", "live");
    try {
      await TP.readEvents(response.body, handle, (ms) => { retryMs = ms; });
    } catch (error) {
      if (mine.signal.aborted) return;
    }
    if (controller === mine) scheduleReconnect(retryMs, "reconnecting…");
  }

  function handle(event, data) {
    if (event === "hello") {
      $("scope").textContent = data.team ? "team " + data.team : "all teams (admin)";
      points = [];
    } else if (event === "point") {
      const last = points.length ? points[points.length - 1].t : -1;
      if (data.t > last) points.push(data);
      if (points.length > MAX_POINTS) points.shift();
      scheduleDraw();
    } else if (event === "stats") {
      setConnection("live", "live");
      $("updated").textContent = "updated " + new Date(data.stats.generated_at).toLocaleTimeString();
      renderCards(data.stats);
      renderOutcomes(data.stats);
      renderBreakdown($("team-table"), "team", data.stats.by_team);
      renderBreakdown($("priority-table"), "priority", data.stats.by_priority);
      LatestTasks.update(data.recent, data.stats);
      for (const el of document.querySelectorAll("[data-window-label]")) {
        el.textContent = "(last " + data.stats.window + ")";
      }
    } else if (event === "unavailable") {
      setConnection("warn", "statistics unavailable: " + data.message);
    }
  }

  // Points arrive in bursts (the history at connect): draw once per frame, not per point.
  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawCharts();
    });
  }

  // ---- charts -----------------------------------------------------------------------

  function prioritySeries(withTotal) {
    const series = withTotal ? [{key: "total", label: "total", color: COLORS.total}] : [];
    for (const p of PRIORITIES) series.push({key: p, label: p, color: COLORS[p]});
    return series;
  }

  function makeCharts() {
    const waitSeries = [];
    for (const p of PRIORITIES) {
      waitSeries.push({key: p + "_p50", label: p + " p50", color: COLORS[p]});
      waitSeries.push({key: p + "_p90", label: p + " p90", color: COLORS[p], dash: true});
    }
    return {
      throughput: new LineChart($("chart-throughput"), {series: prioritySeries(true), unit: "/s"}),
      inFlight: new LineChart($("chart-in-flight"), {series: prioritySeries(true)}),
      scheduled: new LineChart($("chart-scheduled"), {series: prioritySeries(true)}),
      wait: new LineChart($("chart-wait"), {series: waitSeries, unit: "ms"}),
      teams: new LineChart($("chart-teams"), {series: [], unit: "/s"}),
    };
  }

  function drawCharts() {
    if (!charts) return;
    charts.throughput.setData(points.map((p) => ({t: p.t, values: p.throughput})));
    charts.inFlight.setData(points.map((p) => ({t: p.t, values: p.in_flight})));
    // Points written before the recorder counted scheduled tasks have no such figure.
    charts.scheduled.setData(points.map((p) => ({t: p.t, values: p.scheduled || {}})));
    charts.wait.setData(points.map((p) => {
      const values = {};
      for (const q of PRIORITIES) {
        values[q + "_p50"] = p.wait_p50[q];
        values[q + "_p90"] = p.wait_p90[q];
      }
      return {t: p.t, values: values};
    }));
    const teams = new Set();
    for (const p of points) for (const team of Object.keys(p.throughput_by_team)) teams.add(team);
    charts.teams.setSeries([...teams].sort().map((team, i) => ({
      key: team, label: team, color: TEAM_COLORS[i % TEAM_COLORS.length],
    })));
    charts.teams.setData(points.map((p) => ({t: p.t, values: p.throughput_by_team})));
  }

  // ---- tables -----------------------------------------------------------------------

  function ms(value) {
    return value === null || value === undefined ? "–" : value.toFixed(value < 10 ? 1 : 0);
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + "%";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function count(value) {
    return value === null || value === undefined ? "–" : String(value);
  }

  function renderCards(stats) {
    const o = stats.overall;
    const cards = [
      ["throughput", o.throughput_per_s.toFixed(2) + " /s"],
      ["in flight", count(o.in_flight), null, "now"],
      ["scheduled", count(o.scheduled), "waiting for their run_at", "now"],
      ["success rate", percent(o.success_rate)],
      ["finished", String(o.terminal)],
      ["wait p50 / p90", ms(o.latency_ms.wait.p50) + " / " + ms(o.latency_ms.wait.p90) + " ms"],
      ["run p50 / p99", ms(o.latency_ms.run.p50) + " / " + ms(o.latency_ms.run.p99) + " ms"],
      ["end-to-end p99", ms(o.latency_ms.end_to_end.p99) + " ms"],
    ];
    const box = $("cards");
    box.replaceChildren();
    for (const [label, value, note, when] of cards) {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.metric = label;
      const v = document.createElement("div");
      v.className = "value";
      v.textContent = value;
      const l = document.createElement("div");
      l.className = "label";
      l.textContent = label + " · " + (when || "last " + stats.window) + (note ? " · " + note : "");
      card.append(v, l);
      box.appendChild(card);
    }
  }

  // One tile per way a task can end, in its colour: how many ended so in the window.
  function renderOutcomes(stats) {
    const box = $("outcomes");
    box.replaceChildren();
    for (const status of CONTRACT.outcomes) {
      const tile = document.createElement("div");
      tile.className = "card outcome";
      tile.dataset.outcome = status;
      tile.style.borderLeftColor = STATUS_COLORS[status];
      const v = document.createElement("div");
      v.className = "value";
      v.style.color = STATUS_COLORS[status];
      v.textContent = count(stats.overall.outcomes[status]);
      const l = document.createElement("div");
      l.className = "label";
      l.textContent = CONTRACT.labels[status] + " · last " + stats.window;
      tile.append(v, l);
      box.appendChild(tile);
    }
  }

  // Columns: the group, finished, each way to end but success, then the other figures.
  // Each cell carries its column's title (data-column), for people and tests.
  function breakdownColumns(name) {
    return [
      {title: name, value: (key) => key},
      {title: "finished", value: (key, s) => String(s.terminal)},
      ...UNSUCCESSFUL.map((status) => ({
        title: CONTRACT.labels[status],
        color: STATUS_COLORS[status],
        value: (key, s) => count(s.outcomes[status]),
      })),
      {title: "success", value: (key, s) => percent(s.success_rate)},
      {title: "tasks/s", value: (key, s) => s.throughput_per_s.toFixed(2)},
      {title: "in flight", value: (key, s) => count(s.in_flight)},
      {title: "scheduled", value: (key, s) => count(s.scheduled)},
      {title: "wait p50", value: (key, s) => ms(s.latency_ms.wait.p50)},
      {title: "wait p90", value: (key, s) => ms(s.latency_ms.wait.p90)},
      {title: "run p50", value: (key, s) => ms(s.latency_ms.run.p50)},
      {title: "e2e p99", value: (key, s) => ms(s.latency_ms.end_to_end.p99)},
    ];
  }

  function renderBreakdown(table, name, groups) {
    const columns = breakdownColumns(name);
    const head = document.createElement("thead");
    const hr = document.createElement("tr");
    head.appendChild(hr);
    for (const column of columns) {
      const th = document.createElement("th");
      th.textContent = column.title;
      if (column.color) th.style.color = column.color;
      hr.appendChild(th);
    }
    const body = document.createElement("tbody");
    for (const [key, s] of Object.entries(groups)) {
      const tr = document.createElement("tr");
      tr.dataset.group = key;
      for (const column of columns) {
        cell(tr, column.value(key, s)).dataset.column = column.title;
      }
      body.appendChild(tr);
    }
    table.replaceChildren(head, body);
  }

  // ---- start ------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) return;
      TP.setKey(key);
      $("key").value = "";
      connect();
    });
    $("forget").addEventListener("click", () => {
      TP.forgetKey();
      points = [];
      showLogin("");
    });
    $("window").addEventListener("change", () => {
      if (TP.key()) connect();
    });
    window.addEventListener("resize", scheduleDraw);
    if (TP.key()) connect();
    else showLogin("");
  });
})();
