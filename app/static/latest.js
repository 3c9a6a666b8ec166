// The dashboard's latest-tasks table. Without a filter it shows the stats stream's most
// recently active tasks (dashboard.js hands them over with each `stats` event); with one
// (team, status, routine, priority: kept in the page's query string, so a filtered view
// can be bookmarked or shared) it shows GET /api/v1/tasks with those filters, newest
// first, read again at most every few seconds while the stream runs. Each id links to
// the task's page.
"use strict";

window.LatestTasks = (function () {
  const CONTRACT = TP.CONTRACT;
  const FILTERS = ["team", "status", "routine", "priority"];
  const REFRESH_MS = 2000;
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  let lastFetch = 0;
  let fetching = false;
  let generation = 0; // a filter change makes the answers of earlier requests stale

  function chosen() {
    const params = new URLSearchParams(window.location.search);
    const found = {};
    for (const name of FILTERS) {
      const value = (params.get(name) || "").trim();
      if (value) found[name] = value;
    }
    return found;
  }

  function filtering() {
    return Object.keys(chosen()).length > 0;
  }

  // The controls show what the URL says; the URL keeps what the controls say.
  function readControls() {
    const params = new URLSearchParams(window.location.search);
    for (const name of FILTERS) {
      const value = $("filter-" + name).value.trim();
      if (value) params.set(name, value);
      else params.delete(name);
    }
    const query = params.toString();
    history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
  }

  function setOptions(select, values, labels, anyLabel) {
    const current = chosen()[select.id.slice("filter-".length)] || "";
    const wanted = [...values];
    if (current && !wanted.includes(current)) wanted.push(current);
    const seen = [...select.options].map((o) => o.value);
    if (seen.length === wanted.length + 1 && wanted.every((v, i) => seen[i + 1] === v)) {
      select.value = current;
      return;
    }
    const options = [new Option(anyLabel, "")];
    for (const value of wanted) options.push(new Option(labels[value] || value, value));
    select.replaceChildren(...options);
    select.value = current;
  }

  function fillControls(stats) {
    const teams = stats ? Object.keys(stats.by_team).sort() : [];
    setOptions($("filter-team"), teams, {}, "all teams");
    setOptions($("filter-status"), CONTRACT.statuses, CONTRACT.labels, "any status");
    setOptions($("filter-priority"), CONTRACT.priorities, {}, "any priority");
    $("filter-routine").value = chosen().routine || "";
    if (stats) {
      const list = $("routines");
      const routines = Object.keys(stats.by_routine).sort();
      const known = [...list.options].map((o) => o.value);
      if (known.join("\n") !== routines.join("\n")) {
        list.replaceChildren(...routines.map((r) => new Option(r, r)));
      }
    }
  }

  function cell(row, content, className) {
    const td = document.createElement("td");
    if (typeof content === "string") td.textContent = content;
    else td.appendChild(content);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function render(tasks, caption) {
    const rows = [];
    for (const task of tasks) {
      const tr = document.createElement("tr");
      tr.dataset.taskId = task.task_id;
      tr.dataset.status = task.status;
      cell(tr, TP.taskLink(task.task_id));
      cell(tr, task.team);
      cell(tr, task.routine);
      const priority = cell(tr, task.priority, "priority-" + task.priority);
      priority.style.color = CONTRACT.colors[task.priority] || "";
      TP.paintStatus(cell(tr, "", "status"), task.status);
      cell(tr, new Date(task.at).toLocaleTimeString());
      rows.push(tr);
    }
    $("recent-table").querySelector("tbody").replaceChildren(...rows);
    $("recent-caption").textContent = caption;
    $("recent-empty").hidden = tasks.length > 0;
  }

  async function fetchFiltered() {
    const mine = ++generation;
    fetching = true;
    lastFetch = Date.now();
    const params = new URLSearchParams(chosen());
    params.set("limit", String(PAGE));
    try {
      const response = await TP.api("/api/v1/tasks?" + params.toString());
      if (mine !== generation) return;
      if (!response.ok) {
        $("filter-error").textContent = response.status + ": " + (await TP.errorMessage(response));
        render([], "(filtered)");
        return;
      }
      const page = await response.json();
      if (mine !== generation) return;
      $("filter-error").textContent = "";
      const tasks = page.tasks.map((t) => Object.assign({at: t.updated_at}, t));
      render(tasks, "(filtered: newest first, " + PAGE + " at most)");
    } catch (error) {
      if (mine === generation) $("filter-error").textContent = "cannot reach the API";
    } finally {
      if (mine === generation) fetching = false;
    }
  }

  // Each `stats` event of the stream (about once a second).
  function update(recent, stats) {
    fillControls(stats);
    if (!filtering()) {
      $("filter-error").textContent = "";
      render(recent, "(most recently active first)");
    } else if (!fetching && Date.now() - lastFetch >= REFRESH_MS) {
      fetchFiltered();
    }
  }

  function changed() {
    readControls();
    $("recent-table").querySelector("tbody").replaceChildren();
    fetching = false;
    lastFetch = 0;
    generation++;
    if (filtering() && TP.key()) fetchFiltered();
    // Unfiltered: the stream's next `stats` event fills the table.
  }

  document.addEventListener("DOMContentLoaded", () => {
    fillControls(null);
    const form = $("filters");
    form.addEventListener("change", changed);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      changed();
    });
    $("filter-clear").addEventListener("click", () => {
      for (const name of FILTERS) $("filter-" + name).value = "";
      changed();
    });
  });

  return {update};
})();
