/* medverse-lab widgets: built by widgets/build.mjs, do not edit. sources sha256:532053367c37b3eff9779d7cd15670e20fd937ccf1773ac482e507a88de58ec7 */

// src/_dom.js
var SVG_NS = "http://www.w3.org/2000/svg";
function h(tag, className = "", text = null, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== void 0) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}
function s(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null && text !== void 0) node.textContent = String(text);
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

// src/plan_editor.js
var COL = 125;
var ROW = 66;
var PAD = 34;
var BOX_W = 150;
var BOX_H = 44;
var R = 14;
var x = (col) => PAD + col * COL;
var y = (row) => PAD + row * ROW;
var halfWidth = (node) => node.kind === "transition" ? BOX_W / 2 : R;
function forwardArc(x1, y1, x2, y2) {
  const c = Math.max(Math.abs(x2 - x1) / 2, 40);
  return `M${x1},${y1} C${x1 + c},${y1} ${x2 - c},${y2} ${x2},${y2}`;
}
function backArc(x1, y1, x2, y2, below) {
  return `M${x1},${y1} C${x1 + 40},${y1} ${x1 + 40},${below} ${x1},${below} L${x2},${below} C${x2 - 40},${below} ${x2 - 40},${y2} ${x2},${y2}`;
}
function render({ model, el }) {
  let linkFrom = null;
  let linking = false;
  let describeTimer = null;
  const send = (op, args = {}) => model.send({ type: "edit", op, args });
  const steps = () => (model.get("draft") || {}).steps || [];
  const select = (id) => {
    model.set("selected", id || "");
    model.save_changes();
  };
  const root = h("div", "mv-widget mv-plan-editor", null, { tabindex: "0" });
  const toolbar = h("div", "mv-toolbar");
  const addBtn = button("+ Step", "Add a step at the end", () => send("add"));
  const undoBtn = button("Undo", "Undo (Ctrl+Z)", () => send("undo"));
  const redoBtn = button("Redo", "Redo (Ctrl+Shift+Z)", () => send("redo"));
  const linkBtn = button(
    "Link steps",
    "Toggle a dependency: click the step needed first, then the step that needs it",
    () => setLinking(!linking)
  );
  const renumberBtn = button(
    "Renumber",
    "Renumber 1..n in dependency order (fixes forward dependencies)",
    () => send("renumber")
  );
  const fireBtn = button("Fire frontier", "Fire every enabled transition (one wave)", () => send("fire"));
  const resetBtn = button("Reset marking", "Back to the initial marking", () => send("reset"));
  toolbar.append(addBtn, undoBtn, redoBtn, linkBtn, renumberBtn, h("span", "mv-sep"), fireBtn, resetBtn);
  const runBox = h("div", "mv-runbox");
  const questionInput = h("input", "mv-question", null, { type: "text", placeholder: "Question with its options…" });
  const runBtn = button(
    "Run",
    "Run the plan on the engine; steps fire as they finish",
    () => send("run", { question: questionInput.value }),
    "mv-button mv-primary"
  );
  runBox.append(questionInput, runBtn);
  const notice = h("div", "mv-notice", null, { role: "status" });
  const body = h("div", "mv-body");
  const wrap = h("div", "mv-drawing");
  const svg = s("svg", { class: "mv-net", role: "img" });
  wrap.append(svg);
  const side = h("div", "mv-side");
  body.append(wrap, side);
  const status = h("div", "mv-status");
  const warning = h("div", "mv-plan-warning", null, { role: "alert" });
  const problemList = h("ul", "mv-problems");
  root.append(toolbar, runBox, notice, warning, body, status, problemList);
  el.append(root);
  const stopWatching = watchKernel(model, root);
  const sideTitle = h("div", "mv-side-title");
  const idLabel = h("label", "mv-field", "Number");
  const idInput = h("input", "mv-id", null, { type: "text", size: "4", "aria-label": "step number" });
  idLabel.append(idInput);
  const descLabel = h("label", "mv-field", "Description");
  const descArea = h("textarea", "mv-desc", null, { rows: "3", "aria-label": "step description" });
  descLabel.append(descArea);
  const depsTitle = h("div", "mv-field", "Depends on");
  const depsBox = h("div", "mv-deps");
  const stepProblems = h("ul", "mv-step-problems");
  const removeBtn = button(
    "Remove step",
    "Remove this step and every dependency on it",
    () => send("remove", { step: model.get("selected") }),
    "mv-button mv-danger"
  );
  const panel = h("div", "mv-panel");
  panel.append(sideTitle, idLabel, descLabel, depsTitle, depsBox, stepProblems, removeBtn);
  const HINT = "Click a step to edit it (Delete or Backspace removes it). “Link steps”, then click two steps, toggles a dependency.";
  const hint = h("div", "mv-hint", HINT);
  side.append(hint, panel);
  idInput.addEventListener("change", () => {
    const step = model.get("selected");
    if (step && idInput.value.trim() !== step) send("rename", { step, new: idInput.value.trim() });
  });
  idInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") idInput.blur();
  });
  descArea.addEventListener("input", () => {
    clearTimeout(describeTimer);
    const step = model.get("selected");
    const text = descArea.value;
    describeTimer = setTimeout(() => send("describe", { step, description: text }), 250);
  });
  const linkHint = () => {
    hint.textContent = !linking ? HINT : linkFrom === null ? "Linking: click the step that is needed first (Esc stops)." : `Linking: step ${linkFrom} chosen; now click the step that needs it (or step ${linkFrom} again to cancel).`;
    hint.classList.toggle("mv-linking", linking);
  };
  function setLinking(on) {
    linking = on;
    linkFrom = null;
    linkBtn.setAttribute("aria-pressed", String(on));
    linkHint();
    keepFocus(drawNet);
  }
  function clickStep(id) {
    if (!linking) return select(id);
    if (linkFrom === null) {
      linkFrom = id;
    } else if (linkFrom === id) {
      linkFrom = null;
    } else {
      send("toggle", { dependency: linkFrom, step: id });
      linkFrom = null;
    }
    linkHint();
    keepFocus(drawNet);
  }
  function keepFocus(draw) {
    const active = document.activeElement;
    const had = root.contains(active);
    const step = had && active.closest ? active.closest(".mv-transition")?.getAttribute("data-step") : null;
    draw();
    if (!had || root.contains(document.activeElement)) return;
    const again = step === null ? null : [...svg.querySelectorAll(".mv-transition")].find((g) => g.getAttribute("data-step") === step);
    (again || root).focus({ preventScroll: true });
  }
  function problemsByStep() {
    const by = /* @__PURE__ */ new Map();
    for (const p of model.get("errors")) {
      if (p.step === null || p.step === void 0) continue;
      if (!by.has(p.step)) by.set(p.step, []);
      by.get(p.step).push(p.message);
    }
    return by;
  }
  function drawNet() {
    const graph = model.get("graph");
    const marking = model.get("marking") || {};
    const frontier = new Set(model.get("frontier"));
    const fired = new Set(model.get("fired"));
    const running = new Set(model.get("running"));
    const valid = model.get("errors").length === 0;
    const selected = model.get("selected");
    const problems = problemsByStep();
    svg.replaceChildren();
    if (!graph || !graph.nodes) return;
    const width = x(Math.max(graph.cols - 1, 0)) + PAD + BOX_W / 2;
    const bottom = y(Math.max(graph.rows - 1, 0)) + BOX_H / 2;
    const backs = graph.arcs.filter((arc) => arc.back).length;
    const height = bottom + PAD + 12 * backs;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const byKey = new Map(graph.nodes.map((n) => [n.key, n]));
    const arcs = s("g", { class: "mv-arcs" });
    let lane = 0;
    for (const arc of graph.arcs) {
      const a = byKey.get(arc.from);
      const b = byKey.get(arc.to);
      if (!a || !b) continue;
      const x1 = x(a.col) + halfWidth(a);
      const y1 = y(a.row);
      const x2 = x(b.col) - halfWidth(b) - 2;
      const y2 = y(b.row);
      const g = s("g", { class: arc.back ? "mv-arc mv-back" : "mv-arc", "data-from": arc.from, "data-to": arc.to });
      g.append(s("path", { d: arc.back ? backArc(x1, y1, x2, y2, bottom + 10 + 12 * ++lane) : forwardArc(x1, y1, x2, y2) }));
      g.append(s("polygon", { points: `${x2},${y2} ${x2 - 8},${y2 - 4} ${x2 - 8},${y2 + 4}` }));
      arcs.append(g);
    }
    svg.append(arcs);
    for (const node of graph.nodes) {
      const cx = x(node.col);
      const cy = y(node.row);
      if (node.kind === "place") {
        const g2 = s("g", { class: "mv-place-node", "data-place": node.place });
        g2.append(s("circle", { class: "mv-place", cx, cy, r: R }));
        const tokens = valid ? marking[node.place] || 0 : 0;
        if (tokens > 0) g2.append(s("circle", { class: "mv-token", cx, cy, r: 5 }));
        g2.append(s("title", {}, `place ${node.place}: ${tokens} token${tokens === 1 ? "" : "s"}`));
        if (node.step === null) g2.append(s("text", { class: "mv-place-label", x: cx, y: cy + R + 13 }, "source"));
        svg.append(g2);
        continue;
      }
      const id = node.step;
      const classes = ["mv-transition"];
      if (problems.has(id)) classes.push("mv-error");
      if (valid && frontier.has(id)) classes.push("mv-enabled");
      if (valid && fired.has(id)) classes.push("mv-fired");
      if (running.has(id)) classes.push("mv-running");
      if (id === selected) classes.push("mv-selected");
      if (id === linkFrom) classes.push("mv-link-from");
      const g = s("g", { class: classes.join(" "), "data-step": id, tabindex: "0", role: "button" });
      g.append(s("rect", { x: cx - BOX_W / 2, y: cy - BOX_H / 2, width: BOX_W, height: BOX_H, rx: 4 }));
      g.append(s("text", { class: "mv-step-id", x: cx - BOX_W / 2 + 8, y: cy - 5 }, `Step ${id}`));
      g.append(s("text", { class: "mv-step-desc", x: cx - BOX_W / 2 + 8, y: cy + 12 }, clip(node.description, 22)));
      if (problems.has(id)) {
        g.append(s("text", { class: "mv-badge", x: cx + BOX_W / 2 - 14, y: cy - 5 }, "!"));
      }
      const tip = [`Step ${id}: ${node.description}`, ...problems.get(id) || []].join("\n");
      g.append(s("title", {}, tip));
      g.addEventListener("click", (e) => {
        e.stopPropagation();
        clickStep(id);
      });
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          clickStep(id);
        }
      });
      svg.append(g);
    }
  }
  function drawSide() {
    const selected = model.get("selected");
    const all = steps();
    const step = all.find((st) => st.id === selected);
    panel.hidden = !step;
    hint.hidden = !!step;
    if (!step) return;
    sideTitle.textContent = `Step ${step.id}`;
    if (document.activeElement !== idInput) idInput.value = step.id;
    if (document.activeElement !== descArea) descArea.value = step.description;
    depsBox.replaceChildren();
    for (const other of all) {
      if (other.id === step.id) continue;
      const on = step.deps.includes(other.id);
      const chip = button(
        other.id,
        `${on ? "Remove" : "Add"} the dependency on step ${other.id}`,
        () => send("toggle", { dependency: other.id, step: step.id }),
        "mv-chip"
      );
      chip.setAttribute("aria-pressed", String(on));
      depsBox.append(chip);
    }
    for (const unknown of step.deps.filter((d) => !all.some((o) => o.id === d))) {
      const chip = button(
        `${unknown}?`,
        `Step ${unknown} does not exist: remove this dependency`,
        () => send("toggle", { dependency: unknown, step: step.id }),
        "mv-chip mv-bad"
      );
      chip.setAttribute("aria-pressed", "true");
      depsBox.append(chip);
    }
    stepProblems.replaceChildren(...(problemsByStep().get(step.id) || []).map((m) => h("li", "", m)));
  }
  function drawStatus() {
    const errors = model.get("errors");
    const n = steps().length;
    root.classList.toggle("mv-invalid", errors.length > 0);
    status.textContent = errors.length === 0 ? `Valid plan: ${n} step${n === 1 ? "" : "s"}.` : `${errors.length} problem${errors.length === 1 ? "" : "s"}: editor.plan keeps the last valid plan.`;
    problemList.replaceChildren(...errors.map((p) => {
      const li = h("li", p.step ? "mv-clickable" : "", p.step ? `Step ${p.step}: ${p.message}` : p.message);
      li.dataset.kind = p.kind;
      if (p.step) li.addEventListener("click", () => select(p.step));
      return li;
    }));
    undoBtn.disabled = !model.get("can_undo");
    redoBtn.disabled = !model.get("can_redo");
    const busy = model.get("busy");
    fireBtn.disabled = errors.length > 0 || busy || model.get("frontier").length === 0;
    resetBtn.disabled = busy;
    runBox.hidden = !model.get("has_engine");
    runBtn.disabled = busy || errors.length > 0;
    if (document.activeElement !== questionInput) questionInput.value = model.get("question");
    notice.textContent = model.get("notice");
    notice.classList.toggle("mv-error", model.get("notice_kind") === "error");
    warning.textContent = model.get("warning");
    warning.hidden = !model.get("warning");
  }
  const redraw = () => keepFocus(() => {
    drawNet();
    drawSide();
    drawStatus();
  });
  const traits = [
    "draft",
    "errors",
    "graph",
    "marking",
    "frontier",
    "fired",
    "running",
    "selected",
    "can_undo",
    "can_redo",
    "notice",
    "notice_kind",
    "warning",
    "busy",
    "has_engine",
    "question"
  ];
  for (const name of traits) model.on(`change:${name}`, redraw);
  svg.addEventListener("click", () => {
    if (!linking) select("");
  });
  root.addEventListener("keydown", (e) => {
    const tag = e.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") {
      e.preventDefault();
      e.stopPropagation();
      send(e.shiftKey ? "redo" : "undo");
    } else if (mod && e.key.toLowerCase() === "y") {
      e.preventDefault();
      e.stopPropagation();
      send("redo");
    } else if (e.key === "Escape" && linking) {
      setLinking(false);
    } else if ((e.key === "Delete" || e.key === "Backspace") && model.get("selected")) {
      e.preventDefault();
      e.stopPropagation();
      send("remove", { step: model.get("selected") });
    }
  });
  redraw();
  return () => {
    stopWatching();
    clearTimeout(describeTimer);
    for (const name of traits) model.off(`change:${name}`, redraw);
  };
}
var plan_editor_default = { render };
export {
  plan_editor_default as default
};
