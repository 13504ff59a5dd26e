/* medverse-lab widgets: built by widgets/build.mjs, do not edit. sources sha256:532053367c37b3eff9779d7cd15670e20fd937ccf1773ac482e507a88de58ec7 */

// src/_dom.js
function h(tag, className = "", text = null, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== void 0) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}
function button(label, title, onClick, className = "mv-button") {
  const b = h("button", className, label, { type: "button", title });
  b.addEventListener("click", onClick);
  return b;
}
function clip(text, n) {
  const str = String(text);
  return str.length > n ? str.slice(0, n - 1) + "…" : str;
}
function watchKernel(model, root) {
  const ref = model.get("_ref");
  const manager = model.widget_manager;
  let real = null;
  let stopped = false;
  const banner = h("div", "mv-kernel-gone", "This widget was saved with the notebook and its kernel is gone: its controls do nothing. Run the cell again to use it.", { role: "alert" });
  const update = () => {
    const gone = real.comm_live === false;
    root.classList.toggle("mv-no-kernel", gone);
    if (gone && !banner.isConnected) root.prepend(banner);
    if (!gone) banner.remove();
  };
  if (ref && manager && typeof manager.get_model === "function") {
    Promise.resolve(manager.get_model(ref)).then((m) => {
      if (stopped || !m) return;
      real = m;
      update();
      real.on("comm_live_update", update);
    }).catch(() => {
    });
  }
  return () => {
    stopped = true;
    if (real) real.off("comm_live_update", update);
  };
}

// src/run_viewer.js
var capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);
var SPACE = /\s$|^\s/;
function diffNodes(ops) {
  const out = [];
  ops.forEach(([op, text], i) => {
    const prev = ops[i - 1];
    if (prev && prev[0] !== "=" && op !== "=" && prev[0] !== op && !SPACE.test(prev[1].slice(-1) + text.charAt(0))) {
      out.push(h("span", "mv-diff-gap", " ", { "aria-hidden": "true" }));
    }
    out.push(h("span", op === "+" ? "mv-ins" : op === "-" ? "mv-del" : "", text));
  });
  return out;
}
function render({ model, el }) {
  const root = h("div", "mv-widget mv-run-viewer");
  const controls = h("div", "mv-toolbar");
  const question = h("textarea", "mv-question", null, {
    rows: "2",
    placeholder: "Question with its options…",
    "aria-label": "question"
  });
  const mode = h("select", "mv-mode", null, { "aria-label": "mode" });
  const seed = h("input", "mv-seed", null, { type: "number", "aria-label": "seed", title: "seed", style: "width:5em" });
  const temp = h("input", "mv-temp", null, {
    type: "number",
    step: "0.1",
    min: "0",
    "aria-label": "temperature",
    title: "temperature (0 = greedy)",
    style: "width:5em"
  });
  const runBtn = button(
    "Run",
    "Decode in the background; the lanes grow as tokens arrive",
    () => model.send({ type: "run", question: question.value }),
    "mv-button mv-primary"
  );
  const bind = (input, name, parse) => input.addEventListener("change", () => {
    const v = parse(input.value);
    if (!Number.isNaN(v)) {
      model.set(name, v);
      model.save_changes();
    }
  });
  bind(seed, "seed", (v) => parseInt(v, 10));
  bind(temp, "temperature", parseFloat);
  mode.addEventListener("change", () => {
    model.set("mode", mode.value);
    model.save_changes();
  });
  question.addEventListener("change", () => {
    model.set("question", question.value);
    model.save_changes();
  });
  const labelled = (text, input) => {
    const l = h("label", "", `${text} `);
    l.append(input);
    return l;
  };
  controls.append(question, labelled("mode", mode), labelled("seed", seed), labelled("temperature", temp), runBtn);
  const notice = h("div", "mv-notice", null, { role: "status" });
  const warnings = h("ul", "mv-warnings", null, { "aria-label": "warnings" });
  const summary = h("div", "mv-summary");
  const lanesBox = h("div", "mv-lanes");
  const key = (cls, text) => {
    const item = h("span", "", null);
    item.append(h("span", `mv-key ${cls}`), text);
    return item;
  };
  const legend = h("div", "mv-legend");
  legend.append(
    key("mv-key-critical", "bar and bold label: on the critical path"),
    key("mv-key-bar", "grey bar: off it"),
    key("mv-key-live", "orange bar: decoding"),
    key("mv-key-changed", "orange border: changed by the rerun"),
    key("mv-key-selected", "blue outline: selected"),
    document.createTextNode("A bar spans the forward calls its branch took part in; the number is its tokens.")
  );
  const detail = h("div", "mv-detail");
  const historyBox = h("div", "mv-history");
  root.append(controls, notice, warnings, summary, lanesBox, legend, detail, historyBox);
  el.append(root);
  const stopWatching = watchKernel(model, root);
  const detailTitle = h("div", "mv-detail-title");
  const detailText = h("pre", "mv-text");
  const rerunBox = h("div", "mv-rerun");
  const rerunSeed = h("input", "mv-rerun-seed", null, {
    type: "number",
    "aria-label": "rerun seed",
    placeholder: "seed",
    style: "width:6em"
  });
  const rerunSeedBtn = button(
    "Rerun with seed",
    "Decode this step again (and what depends on it) with this seed",
    () => model.send({ type: "rerun", step: model.get("selected"), seed: rerunSeed.value })
  );
  const rerunText = h("textarea", "mv-rerun-text", null, { rows: "3", "aria-label": "edited step text" });
  const rerunTextBtn = button(
    "Rerun with this text",
    "Force this text as the step and decode what depends on it",
    () => model.send({ type: "rerun", step: model.get("selected"), text: rerunText.value })
  );
  rerunBox.append(rerunSeed, rerunSeedBtn, rerunText, rerunTextBtn);
  const diffTitle = h("div", "mv-field", "Changes against the previous version");
  const diffBox = h("div", "mv-diff-text");
  detail.append(detailTitle, detailText, rerunBox, diffTitle, diffBox);
  const select = (branch) => {
    model.set("selected", branch);
    model.save_changes();
  };
  function drawControls() {
    const modes = model.get("modes");
    if (mode.options.length !== modes.length) mode.replaceChildren(...modes.map((m) => h("option", "", m, { value: m })));
    mode.value = model.get("mode");
    if (document.activeElement !== question) question.value = model.get("question");
    if (document.activeElement !== seed) seed.value = model.get("seed");
    if (document.activeElement !== temp) temp.value = model.get("temperature");
    const busy = model.get("busy");
    runBtn.disabled = busy;
    rerunSeedBtn.disabled = rerunTextBtn.disabled = busy || model.get("current") < 0;
    root.classList.toggle("mv-busy", busy);
    notice.textContent = model.get("notice");
  }
  function drawSummary() {
    const s = model.get("summary") || {};
    const list = s.live ? [] : s.warnings || [];
    warnings.replaceChildren(...list.map((w) => h("li", "", w)));
    warnings.hidden = list.length === 0;
    notice.classList.toggle("mv-warn", list.length > 0);
    if (s.live) {
      summary.textContent = `decoding… ${s.calls || 0} forward calls so far`;
      return;
    }
    if (s.call_speedup === void 0) {
      summary.textContent = "No run yet.";
      return;
    }
    const path = s.critical_path.join(" → ") || "none";
    const over = s.scope.startsWith("rerun") ? "the re-decoded steps" : "this plan";
    const answer = s.answer ? `Answer: ${s.answer}.` : `${capital(s.answer_note || "no answer")}.`;
    summary.textContent = `${s.mode}, ${s.scope}: ${s.phase2_tokens} tokens in ${s.forward_calls} forward calls: call speedup ${s.call_speedup.toFixed(2)}x against sequential decoding (ideal for ${over}, one token per call: ${s.ideal_call_speedup.toFixed(2)}x). Critical path ${path} (${s.critical_tokens} tokens). ${answer} Seed ${s.seed}, ${s.total_s ?? 0} s.` + (s.backend_note ? ` ${s.backend_note}.` : "");
  }
  function drawLanes() {
    const lanes = model.get("lanes");
    const s = model.get("summary") || {};
    const critical = new Set(s.critical_path || []);
    const diffs = model.get("diffs") || {};
    const selected = model.get("selected");
    const first = Math.min(...lanes.map((l) => l.first_call), Infinity);
    const last = Math.max(...lanes.map((l) => l.last_call), 0);
    const span = Math.max(last - (first === Infinity ? 0 : first) + 1, 1);
    lanesBox.replaceChildren(...lanes.map((lane) => {
      const row = h("div", "mv-lane", null, { "data-branch": lane.branch, role: "button", tabindex: "0" });
      row.classList.toggle("mv-critical", critical.has(lane.branch));
      row.classList.toggle("mv-live", !lane.done);
      row.classList.toggle("mv-selected", lane.branch === selected);
      row.classList.toggle("mv-changed", lane.branch in diffs);
      const label = h("div", "mv-lane-label", clip(lane.label, 48), { title: lane.label });
      const track = h("div", "mv-track");
      const bar = h("div", "mv-bar", null, { title: `forward calls ${lane.first_call}–${lane.last_call}, ${lane.tokens} tokens` });
      bar.style.left = `${100 * (lane.first_call - first) / span}%`;
      bar.style.width = `${Math.max(100 * (lane.last_call - lane.first_call + 1) / span, 0.5)}%`;
      track.append(bar);
      const count = h("div", "mv-lane-count", `${lane.tokens}`);
      const preview = h("div", "mv-lane-text", lane.text.length > 160 ? `…${lane.text.slice(-160)}` : lane.text);
      row.append(label, track, count, preview);
      row.addEventListener("click", () => select(lane.branch));
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter") select(lane.branch);
      });
      return row;
    }));
  }
  function drawDetail() {
    const selected = model.get("selected");
    const lane = model.get("lanes").find((l) => l.branch === selected);
    detail.hidden = !lane;
    if (!lane) return;
    detailTitle.textContent = lane.label;
    detailText.textContent = lane.text;
    const isStep = lane.branch !== "prefix" && lane.branch !== "conclusion";
    rerunBox.hidden = !isStep;
    if (isStep && document.activeElement !== rerunText && rerunText.dataset.branch !== selected) {
      rerunText.value = lane.text;
      rerunText.dataset.branch = selected;
    }
    const diff = (model.get("diffs") || {})[selected];
    diffTitle.hidden = diffBox.hidden = !diff;
    diffBox.replaceChildren(...diffNodes(diff || []));
  }
  function drawHistory() {
    const history = model.get("history");
    const current = model.get("current");
    historyBox.replaceChildren(h("span", "mv-field", "History"), ...history.map((entry) => {
      const what = entry.kind === "rerun" ? `rerun step ${entry.step}` : "run";
      const b = button(
        `#${entry.index + 1} ${what} · ${entry.mode} · seed ${entry.seed} · ${entry.answer ?? "–"}`,
        `seed ${entry.seed}: the seed this ${what} used; call speedup ${entry.call_speedup}x`,
        () => {
          model.set("current", entry.index);
          model.save_changes();
        },
        "mv-chip"
      );
      b.setAttribute("aria-pressed", String(entry.index === current));
      if (entry.warnings) {
        b.classList.add("mv-warn");
        b.title += `; ${entry.warnings} warning${entry.warnings === 1 ? "" : "s"}`;
      }
      return b;
    }));
  }
  const all = () => {
    drawControls();
    drawSummary();
    drawLanes();
    drawDetail();
    drawHistory();
  };
  const handlers = [
    ["change:lanes", () => {
      drawLanes();
      drawDetail();
    }],
    ["change:summary", () => {
      drawSummary();
      drawLanes();
    }],
    ["change:diffs", () => {
      drawLanes();
      drawDetail();
    }],
    ["change:selected", () => {
      rerunText.dataset.branch = "";
      drawLanes();
      drawDetail();
    }],
    ["change:history", drawHistory],
    ["change:current", () => {
      drawHistory();
      drawControls();
    }],
    ["change:busy", drawControls],
    ["change:notice", drawControls],
    ["change:mode", drawControls],
    ["change:seed", drawControls],
    ["change:temperature", drawControls],
    ["change:question", drawControls]
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  all();
  return () => {
    for (const [name, fn] of handlers) model.off(name, fn);
    stopWatching();
  };
}
var run_viewer_default = { render };
export {
  run_viewer_default as default
};
