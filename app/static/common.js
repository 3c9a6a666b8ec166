// What the dashboard's pages share: the page contract (rendered from core/), the API key
// kept in the tab's sessionStorage (never in a URL), calls to the API with that key, a
// reader of server-sent events over fetch() (an EventSource cannot send an Authorization
// header), and the header's task-id search box.
"use strict";

window.TP = (function () {
  const STORAGE_KEY = "taskplatform.apiKey";
  const CONTRACT = JSON.parse(document.getElementById("contract").textContent);
  const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

  function key() {
    return sessionStorage.getItem(STORAGE_KEY);
  }

  function setKey(value) {
    sessionStorage.setItem(STORAGE_KEY, value);
  }

  function forgetKey() {
    sessionStorage.removeItem(STORAGE_KEY);
  }

  // fetch() of the API with the key; `options.json` is sent as a JSON body.
  function api(path, options) {
    const opts = Object.assign({}, options || {});
    const headers = Object.assign({Authorization: "Bearer " + key()}, opts.headers || {});
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    opts.headers = headers;
    opts.cache = "no-store";
    return fetch(path, opts);
  }

  // The message of the API's error body ({"error": {"message": ...}}), or the status text.
  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.error.message;
    } catch (error) {
      return response.statusText || "error";
    }
  }

  // Calls onEvent(event, data) for each event of the stream; onRetry(ms) for `retry:`.
  async function readEvents(body, onEvent, onRetry) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        parseBlock(block, onEvent, onRetry);
      }
    }
  }

  // One SSE block: `event:`, `data:` (possibly several), `retry:`; `:` starts a comment.
  function parseBlock(block, onEvent, onRetry) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line[0] === ":") continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value) && onRetry) onRetry(Number(value));
    }
    if (data.length) onEvent(event, JSON.parse(data.join("\n")));
  }

  function isTaskId(text) {
    return UUID.test(text);
  }

  function taskPath(taskId) {
    return "/dashboard/tasks/" + encodeURIComponent(taskId);
  }

  // A link to a task's page, showing its id.
  function taskLink(taskId) {
    const a = document.createElement("a");
    a.href = taskPath(taskId);
    a.textContent = taskId;
    a.className = "mono";
    return a;
  }

  // A status as people read it, in its colour.
  function paintStatus(el, status) {
    el.textContent = CONTRACT.labels[status] || status;
    el.style.color = CONTRACT.status_colors[status] || "";
    el.dataset.status = status;
  }

  function isTerminal(status) {
    return CONTRACT.outcomes.includes(status);
  }

  // The header's search box: a task id opens its page; anything else, or an id the key
  // does not see, says so beside the box.
  function wireSearch() {
    const form = document.getElementById("search");
    if (!form) return;
    const input = document.getElementById("search-id");
    const message = document.getElementById("search-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      message.textContent = "";
      if (!text) return;
      if (!isTaskId(text)) {
        message.textContent = "“" + text + "” is not a task id (task ids are UUIDs)";
        return;
      }
      if (key()) {
        let response;
        try {
          response = await api("/api/v1/tasks/" + encodeURIComponent(text));
        } catch (error) {
          message.textContent = "cannot reach the API";
          return;
        }
        if (response.status === 404) {
          message.textContent = "no task " + text + " (or not one this key may see)";
          return;
        }
        if (!response.ok && response.status !== 401) {
          message.textContent = response.status + ": " + (await errorMessage(response));
          return;
        }
      }
      window.location.assign(taskPath(text.toLowerCase()));
    });
  }

  document.addEventListener("DOMContentLoaded", wireSearch);

  return {
    CONTRACT, key, setKey, forgetKey, api, errorMessage, readEvents,
    isTaskId, taskPath, taskLink, paintStatus, isTerminal,
  };
})();
