// Sluice test console (templates/webui/console.html): sends the form to the management plane's relay, which
// forwards it to the gateway and streams the answer back as one JSON line (status, headers, trace) followed by
// the gateway's body. The body is shown as it arrives; token usage is read from the JSON body or the SSE events.
"use strict";
(function () {
  const form = document.getElementById("console");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;

  function pairs(id) {
    return Array.from($(id).querySelectorAll(".pair"))
      .map((row) => [row.querySelector(".pair-name").value.trim(), row.querySelector(".pair-value").value])
      .filter((pair) => pair[0] !== "");
  }

  form.querySelectorAll("[data-add]").forEach((button) => {
    button.addEventListener("click", () => {
      const list = $(button.dataset.add);
      const row = list.querySelector(".pair").cloneNode(true);
      row.querySelectorAll("input").forEach((input) => { input.value = ""; });
      list.appendChild(row);
      row.querySelector("input").focus();
    });
  });

  const key = $("key");
  const showKey = $("show-key");
  const subscription = $("subscription");
  if (showKey) {
    showKey.addEventListener("click", async () => {
      if (key.type === "text") {
        key.type = "password";
        showKey.setAttribute("aria-pressed", "false");
        return;
      }
      if (!key.value) {
        const data = new FormData();
        data.append("subscription", subscription.value);
        const answer = await fetch(form.dataset.keyUrl, { method: "POST", body: data, headers: { "X-CSRFToken": csrf } });
        const json = await answer.json();
        if (!answer.ok) { alert(json.detail); return; }
        key.value = json.key;
      }
      key.type = "text";
      showKey.setAttribute("aria-pressed", "true");
    });
    subscription.addEventListener("change", () => { key.value = ""; key.type = "password"; });
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function showTrace(trace) {
    const rows = $("trace-rows");
    rows.replaceChildren();
    $("trace-panel").hidden = !trace;
    if (!trace) return;
    for (const entry of trace) {
      const row = document.createElement("tr");
      const { section, policy, scope, elapsed_ms: ms, since_start_ms: since, ...decision } = entry;
      cell(row, section || "");
      cell(row, policy || (entry.error ? "error" : ""));
      cell(row, scope || "");
      cell(row, Object.entries(decision).map(([k, v]) => `${k}: ${readable(v)}`).join("; "));
      cell(row, ms === undefined ? "" : String(ms));
      rows.appendChild(row);
    }
    showSummary(trace);
  }

  // a value of the trace as words: an object as "k=v, k=v", a list of them (a pool's attempts) joined by arrows
  function readable(value) {
    if (Array.isArray(value)) return value.map(readable).join(" → ");
    if (value && typeof value === "object") {
      return Object.entries(value).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
    }
    return String(value);
  }

  // the decisions a reader looks for first: the semantic cache, the content-safety verdicts and the backend chosen
  function showSummary(trace) {
    const items = [];
    for (const entry of trace) {
      if (entry.policy === "llm-semantic-cache-lookup" && entry.result) {
        const score = entry.score === undefined ? "" : ` (score ${entry.score}, threshold ${entry["score-threshold"]})`;
        items.push(`Semantic cache: ${entry.result}${score}`);
      } else if (entry.policy === "llm-content-safety" && entry.outcome) {
        const why = entry.reason ? ` (${entry.reason}${entry.detail ? `: ${entry.detail}` : ""})` : "";
        items.push(`Content safety, ${entry.check || "check"}: ${entry.outcome}${why} by ${entry.engine || "engine"}`);
      } else if (entry.policy === "forward-request" && (entry.member || entry.backend)) {
        const tries = Array.isArray(entry.attempts) ? ` after ${entry.attempts.length} attempts` : "";
        items.push(`Backend: ${entry.member || entry.backend}${entry.status ? ` answered ${entry.status}` : ""}${tries}`);
      }
    }
    const list = $("trace-summary");
    list.replaceChildren(...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    list.hidden = !items.length;
  }

  function usageOf(text) {
    let usage = null;
    try { usage = JSON.parse(text).usage || null; } catch (e) {
      for (const line of text.split("\n")) {
        if (!line.startsWith("data:")) continue;
        try { const event = JSON.parse(line.slice(5)); if (event.usage) usage = event.usage; } catch (e2) { /* [DONE] */ }
      }
    }
    return usage;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = {};
    form.querySelectorAll("[data-param]").forEach((input) => { params[input.dataset.param] = input.value; });
    const headers = pairs("header-pairs");
    if (key && key.value) headers.push([$("key").labels[0].textContent.trim(), key.value]);
    const request = {
      operation: form.querySelector("[name=operation]").value,
      parameters: params,
      query: pairs("query-pairs"),
      headers: headers,
      subscription: subscription ? subscription.value : "",
      body: $("body") ? $("body").value : "",
      trace: $("trace").checked,
    };
    const out = $("response-body");
    $("response").hidden = false;
    $("response").scrollIntoView({ block: "start" }); // below the form: show where the answer comes
    out.textContent = "";
    $("response-status").textContent = "Sending…";
    $("response-note").hidden = true;
    $("response-usage").textContent = "";
    $("response-headers").replaceChildren();
    showTrace(null);
    $("send").disabled = true;
    try {
      const answer = await fetch(form.dataset.sendUrl, {
        method: "POST",
        body: JSON.stringify(request),
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      });
      if (!answer.ok) {
        const problem = await answer.json().catch(() => ({ detail: answer.statusText }));
        $("response-status").textContent = `Not sent: ${problem.detail}`;
        return;
      }
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      let meta = null;
      let body = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const text = decoder.decode(value, { stream: true });
        if (meta === null) {
          buffered += text;
          const newline = buffered.indexOf("\n");
          if (newline < 0) continue;
          meta = JSON.parse(buffered.slice(0, newline));
          $("response-status").textContent = `${meta.status} ${meta.reason}`;
          if (meta.note) {
            $("response-note").textContent = meta.note;
            $("response-note").hidden = false;
          }
          for (const [name, headerValue] of meta.headers) {
            const row = document.createElement("tr");
            cell(row, name);
            cell(row, headerValue);
            $("response-headers").appendChild(row);
          }
          showTrace(meta.trace);
          body = buffered.slice(newline + 1);
        } else {
          body += text;
        }
        out.textContent = body;
      }
      try { out.textContent = JSON.stringify(JSON.parse(body), null, 2); } catch (e) { /* not JSON: as received */ }
      const usage = usageOf(body);
      $("response-usage").textContent = usage
        ? `Tokens: prompt ${usage.prompt_tokens}, completion ${usage.completion_tokens}, total ${usage.total_tokens}`
        : "No token usage in the answer.";
    } catch (error) {
      $("response-status").textContent = `Failed: ${error}`;
    } finally {
      $("send").disabled = false;
    }
  });
})();
