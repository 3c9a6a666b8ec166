// One task's page: reads GET /api/v1/tasks/<id> with the tab's key, then follows
// /api/v1/tasks/<id>/events?follow=1 (server-sent events, read with fetch()) until the
// task ends, adding each step to the timeline and reading the task again for its status,
// result or error. A task that has not ended has a Cancel button. Statuses, labels,
// colours and stages come from the page's contract (rendered from core/).
"use strict";

(function () {
  const CONTRACT = TP.CONTRACT;
  const $ = (id) => document.getElementById(id);
  const main = $("task");
  if (!main) return; // the page of an id that is not a task id: nothing to read
  const TASK_ID = main.dataset.taskId;
  const TASK_URL = "/api/v1/tasks/" + TASK_ID;

  let task = null;
  const live = new Map(); // event_id -> event, as the stream sent them
  let controller = null;
  let reconnectTimer = null;
  let retryMs = 3000;
  let refreshing = null;
  let refreshAgain = false;

  // ---- page state -------------------------------------------------------------------

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function stop() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (controller) controller.abort();
    controller = null;
  }

  function showLogin(message) {
    stop();
    main.hidden = true;
    $("problem").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("scope").textContent = "";
    setConnection("idle", "not connected");
    $("key").focus();
  }

  function showProblem(message) {
    stop();
    main.hidden = true;
    $("login").hidden = true;
    const box = $("problem");
    const p = document.createElement("p");
    p.textContent = message;
    const back = document.createElement("p");
    const a = document.createElement("a");
    a.href = "/dashboard";
    a.textContent = "Back to the dashboard";
    back.appendChild(a);
    box.replaceChildren(p, back);
    box.hidden = false;
    setConnection("warn", "not found");
  }

  function retryLater(text, delay) {
    setConnection("waiting", text);
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(start, delay || 5000);
  }

  // ---- reading the task -------------------------------------------------------------

  // GET the task and draw it. Returns false when the page cannot go on (login, not found).
  async function load() {
    let response;
    try {
      response = await TP.api(TASK_URL);
    } catch (error) {
      retryLater("cannot reach the API; retrying");
      return false;
    }
    if (response.status === 401) {
      TP.forgetKey();
      showLogin("The API refused that key (401). Enter a valid key.");
      return false;
    }
    if (response.status === 404) {
      showProblem("No task " + TASK_ID + ", or not one this key may see (" +
        (await TP.errorMessage(response)) + ").");
      return false;
    }
    if (!response.ok) {
      retryLater(response.status + ": " + (await TP.errorMessage(response)) + " (retrying)");
      return false;
    }
    task = await response.json();
    $("login").hidden = true;
    $("problem").hidden = true;
    $("forget").hidden = false;
    main.hidden = false;
    render();
    return true;
  }

  // Read the task again after a step; one request at a time, and one more if asked meanwhile.
  function refresh() {
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = load().finally(() => {
      refreshing = null;
      if (refreshAgain) {
        refreshAgain = false;
        refresh();
      }
    });
    return refreshing;
  }

  async function start() {
    stop();
    if (!TP.key()) {
      showLogin("");
      return;
    }
    if (!(await load())) return;
    if (TP.isTerminal(task.status)) {
      setConnection("ended", "ended");
      return;
    }
    follow();
  }

  async function follow() {
    const mine = new AbortController();
    controller = mine;
    setConnection("connecting", "connecting…");
    let response;
    try {
      response = await TP.api(TASK_URL + "/events?follow=1", {
        headers: {Accept: "text/event-stream"},
        signal: mine.signal,
      });
    } catch (error) {
      if (!mine.signal.aborted) retryLater("cannot reach the API; retrying");
      return;
    }
    if (response.status === 401) {
      TP.forgetKey();
      showLogin("The API refused that key (401). Enter a valid key.");
      return;
    }
    if (!response.ok) {
      retryLater(response.status + ": " + (await TP.errorMessage(response)) + " (retrying)");
      return;
    }
    setConnection("live", "live");
    let ended = false;
    try {
      await TP.readEvents(response.body, (event, data) => {
        if (event === "status") {
          live.set(data.event_id, data);
          if (task) renderTimeline();
          refresh();
        } else if (event === "end") {
          ended = data.reason === "terminal";
        } else if (event === "unavailable") {
          setConnection("warn", "task store unavailable: " + data.message);
        }
      }, (ms) => { retryMs = ms; });
    } catch (error) {
      if (mine.signal.aborted) return;
    }
    if (controller !== mine) return;
    await refresh();
    if (ended || (task && TP.isTerminal(task.status))) {
      controller = null;
      setConnection("ended", "ended");
    } else {
      retryLater("reconnecting…", retryMs);
    }
  }

  // ---- drawing ----------------------------------------------------------------------

  function time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleString() + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function duration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
    return (ms / 3600000).toFixed(1) + " h";
  }

  function between(from, to) {
    return from && to ? new Date(to) - new Date(from) : null;
  }

  function label(status) {
    return CONTRACT.labels[status] || status;
  }

  // The recorded timeline, with any step the stream sent that the last read did not have.
  function events() {
    const all = [...(task.timeline || [])];
    // A task not yet in Postgres is read from the API's accepted cache: its ACCEPTED step
    // has no event id there, so steps are also told apart by status and attempt.
    const step = (e) => e.status + ":" + e.attempt;
    const known = new Set(all.map((e) => e.event_id || step(e)));
    for (const [id, event] of live) {
      if (!known.has(id) && !known.has(step(event))) all.push(event);
    }
    return all
      .map((event, index) => ({event, index}))
      .sort((a, b) => (new Date(a.event.at) - new Date(b.event.at)) || (a.index - b.index))
      .map((entry) => entry.event);
  }

  // Where the task was at this step: the event's own word, else the contract's.
  function stageOf(event) {
    const detail = event.detail || {};
    if (event.status === CONTRACT.named.cancelled && detail.stage) return "cancelled while " + label(detail.stage);
    if (typeof detail.stage === "string") return detail.stage;
    if (detail.held_by) return "held by " + detail.held_by;
    return CONTRACT.stages[event.status] || "";
  }

  function detailText(event) {
    const detail = Object.assign({}, event.detail || {});
    delete detail.worker;
    return Object.entries(detail)
      .map(([k, v]) => k + ": " + (typeof v === "string" ? v : JSON.stringify(v)))
      .join(" · ");
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function renderTimeline() {
    const rows = [];
    let previous = null;
    events().forEach((event, i) => {
      const tr = document.createElement("tr");
      tr.dataset.status = event.status;
      cell(tr, String(i + 1));
      TP.paintStatus(cell(tr, "", "status"), event.status);
      cell(tr, stageOf(event), "stage");
      cell(tr, (event.detail && event.detail.worker) || "–", "worker");
      cell(tr, String(event.attempt));
      cell(tr, event.queue || "–");
      cell(tr, time(event.at));
      cell(tr, previous ? "+" + duration(between(previous.at, event.at)) : "–", "since");
      cell(tr, detailText(event), "detail");
      rows.push(tr);
      previous = event;
    });
    $("timeline").querySelector("tbody").replaceChildren(...rows);
  }

  function renderFacts() {
    const facts = [
      ["team", task.team],
      ["routine", task.routine],
      ["priority", task.priority],
      ["queue", task.queue || "–"],
      ["attempts", String(task.attempts)],
      ["created", time(task.created_at)],
      ["run at", task.run_at ? time(task.run_at) : null],
      ["expires at", task.expires_at ? time(task.expires_at) : null],
      ["started", time(task.started_at)],
      ["finished", time(task.finished_at)],
      ["created → started", duration(between(task.created_at, task.started_at))],
      ["started → end", duration(between(task.started_at, task.finished_at))],
    ];
    const items = [];
    for (const [name, value] of facts) {
      if (value === null) continue;
      const box = document.createElement("div");
      box.dataset.fact = name;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (name === "priority" || name === "queue") dd.style.color = CONTRACT.colors[value] || "";
      box.append(dt, dd);
      items.push(box);
    }
    $("facts").replaceChildren(...items);
  }

  // What routing and the lifecycle did to the task, in words (from the events' details).
  function notes() {
    const found = [];
    for (const event of events()) {
      const d = event.detail || {};
      if (d.demoted_from) {
        found.push(["demoted", "Demoted from " + d.demoted_from + " to " + (event.queue || "?") +
          (d.reason ? ": " + d.reason : "")]);
      }
      if (d.capped_from) {
        found.push(["capped", "Asked for " + d.capped_from + "; its routine may have " +
          (event.queue || "?") + " at most"]);
      }
      if (d.staggered_by_seconds !== undefined) {
        found.push(["staggered", "Staggered: held " + d.staggered_by_seconds +
          " s after acceptance before dispatch (its routine spreads bursts)"]);
      }
      if (event.status === CONTRACT.named.scheduled) {
        found.push(["scheduled", "Scheduled for " + time(task.run_at) +
          (d.held_by ? ", held by " + d.held_by : "")]);
      }
      if (d.note) found.push(["note", d.note]);
      if (event.status === CONTRACT.named.retrying) {
        found.push(["retry", "Attempt " + event.attempt + " failed" +
          (d.error ? " (" + d.error + ")" : "") +
          (d.retry_in_seconds !== undefined ? "; retry in " + d.retry_in_seconds + " s" : "")]);
      }
      if (event.status === CONTRACT.named.cancelled) {
        found.push(["cancelled", "Cancelled" + (d.cancelled_by ? " by " + d.cancelled_by : "") +
          (d.stage ? " while " + label(d.stage) : "") +
          (d.terminate ? ", stopping its run" : "")]);
      }
    }
    return found;
  }

  function renderNotes() {
    const items = notes().map(([kind, text]) => {
      const li = document.createElement("li");
      li.dataset.note = kind;
      li.textContent = text;
      return li;
    });
    $("note-list").replaceChildren(...items);
    $("notes").hidden = items.length === 0;
  }

  function json(value) {
    return value === null || value === undefined ? "–" : JSON.stringify(value, null, 2);
  }

  function render() {
    document.title = "Task " + TASK_ID + " · " + label(task.status);
    TP.paintStatus($("task-status"), task.status);
    $("scope").textContent = "team " + task.team;
    const ended = TP.isTerminal(task.status);
    $("cancel").hidden = ended;
    $("terminate").parentElement.hidden = ended;
    renderFacts();
    renderNotes();
    renderTimeline();
    $("payload").textContent = json(task.payload);
    const hasResult = task.result !== null && task.result !== undefined;
    $("result-box").hidden = !hasResult;
    $("result").textContent = json(task.result);
    $("error-box").hidden = !task.error;
    $("error").textContent = task.error || "";
  }

  // ---- cancel -----------------------------------------------------------------------

  async function cancel() {
    const button = $("cancel");
    const message = $("cancel-message");
    button.disabled = true;
    message.textContent = "cancelling…";
    let response;
    try {
      response = await TP.api(TASK_URL + "/cancel", {
        method: "POST",
        json: {terminate: $("terminate").checked},
      });
    } catch (error) {
      message.textContent = "cannot reach the API";
      button.disabled = false;
      return;
    }
    if (response.status === 401) {
      TP.forgetKey();
      showLogin("The API refused that key (401). Enter a valid key.");
      return;
    }
    if (response.status === 202) {
      const answer = await response.json();
      message.textContent = "Cancelled while " + label(answer.stage) +
        (answer.terminate ? " (its run is being stopped)" : "");
    } else {
      message.textContent = response.status + ": " + (await TP.errorMessage(response));
      button.disabled = false;
    }
    await refresh();
  }

  // ---- start ------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) return;
      TP.setKey(key);
      $("key").value = "";
      start();
    });
    $("forget").addEventListener("click", () => {
      TP.forgetKey();
      showLogin("");
    });
    $("cancel").addEventListener("click", cancel);
    start();
  });
})();
