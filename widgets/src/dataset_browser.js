// DatasetBrowser view (the RecordTable model): a filterable table of records drawn as a
// virtual list (only the rows in view exist in the DOM), and the selected record's text with
// each problem's span marked. Python filters and re-checks; this view only draws and asks.
import { button, bytesOf, h, watchKernel } from "./_dom.js";

const ROW_H = 24;
const COLS = [
  ["id", "record", "mv-c-id"], ["steps", "steps", "mv-c-num"], ["width", "width", "mv-c-num"],
  ["errors", "errors", "mv-c-num"], ["kinds", "problems", "mv-c-kinds"], ["key", "key", "mv-c-num"],
];

function render({ model, el }) {
  let cols = {};
  let visible = new Int32Array(0);
  let fixed = new Set();
  let editing = false;

  const set = (name, value) => { model.set(name, value); model.save_changes(); };

  // ----- skeleton -------------------------------------------------------------------
  const root = h("div", "mv-widget mv-dataset-browser");
  const toolbar = h("div", "mv-toolbar");
  const kindSelect = h("select", "mv-kind", null, { "aria-label": "problem kind" });
  const searchInput = h("input", "mv-search", null, { type: "text", placeholder: "Search id or text…" });
  const count = h("span", "mv-count");
  toolbar.append(kindSelect, searchInput, count);
  const notice = h("div", "mv-notice", null, { role: "status" });

  const header = h("div", "mv-row mv-head");
  for (const [, label, cls] of COLS) header.append(h("span", cls, label));
  const scroller = h("div", "mv-rows", null, { tabindex: "0" });
  const spacer = h("div", "mv-spacer");
  const rowsBox = h("div", "mv-window");
  scroller.append(spacer, rowsBox);

  const record = h("div", "mv-record");
  const recordTitle = h("div", "mv-record-title");
  const textBox = h("pre", "mv-text");
  const editor = h("textarea", "mv-text-edit", null, { rows: "16", spellcheck: "false" });
  editor.hidden = true;
  const editBtn = button("Edit text", "Edit the assistant turn; Apply re-checks it", () => toggleEdit(true));
  const applyBtn = button("Apply", "Replace the record's text and re-check", () => {
    model.send({ type: "fix_text", index: model.get("selected"), text: editor.value });
    toggleEdit(false);
  }, "mv-button mv-primary");
  const cancelBtn = button("Cancel", "Keep the text as it was", () => toggleEdit(false));
  const recordBar = h("div", "mv-toolbar");
  recordBar.append(editBtn, applyBtn, cancelBtn);
  const problemList = h("ul", "mv-problems");
  record.append(recordTitle, recordBar, textBox, editor, problemList);

  const saveBar = h("div", "mv-toolbar");
  const pathInput = h("input", "mv-save-path", null, { type: "text", placeholder: "fixed.jsonl" });
  const savePath = () => pathInput.value || "fixed.jsonl";
  const saveBtn = button("Save as", "Write every record, fixed ones replaced, to a new JSONL file",
    () => model.send({ type: "save", path: savePath() }));
  const overwriteBtn = button("Overwrite", "Replace the existing file with the records as they are now",
    () => model.send({ type: "save", path: savePath(), overwrite: true }), "mv-button mv-danger");
  const saveStatus = h("span", "mv-save-status", null, { role: "status" });
  saveBar.append(pathInput, saveBtn, saveStatus, overwriteBtn);

  const table = h("div", "mv-table");
  const empty = h("div", "mv-empty", null, { role: "status" }); // a filter that matches nothing says so
  table.append(header, scroller, empty);
  root.append(toolbar, notice, table, record, saveBar);
  el.append(root);
  const stopWatching = watchKernel(model, root);

  // ----- drawing ---------------------------------------------------------------------
  function toggleEdit(on) {
    editing = on && model.get("selected") >= 0;
    editor.hidden = !editing;
    textBox.hidden = editing;
    applyBtn.hidden = cancelBtn.hidden = !editing;
    editBtn.hidden = editing || model.get("selected") < 0;
    if (editing) editor.value = model.get("text");
  }

  function drawKinds() {
    const current = model.get("kind");
    kindSelect.replaceChildren(h("option", "", "all records", { value: "" }),
      h("option", "", "any error", { value: "any" }));
    for (const [kind, n] of model.get("kinds")) kindSelect.append(h("option", "", `${kind} (${n})`, { value: kind }));
    kindSelect.value = current;
  }

  function drawRows() {
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - 5);
    const last = Math.min(visible.length, first + Math.ceil((scroller.clientHeight || 400) / ROW_H) + 10);
    const selected = model.get("selected");
    rowsBox.style.transform = `translateY(${first * ROW_H}px)`;
    const rows = [];
    for (let v = first; v < last; v++) {
      const i = visible[v];
      const row = h("div", "mv-row", null, { "data-index": i, role: "row" });
      if (i === selected) row.classList.add("mv-selected");
      if (cols.errors[i] > 0) row.classList.add("mv-has-errors");
      for (const [name, , cls] of COLS) {
        const value = name === "kinds" ? cols.kinds[i].join(", ") : cols[name][i];
        row.append(h("span", cls, name === "id" && fixed.has(i) ? `${value} ✎` : value));
      }
      rows.push(row);
    }
    rowsBox.replaceChildren(...rows);
  }

  function drawTable() {
    visible = new Int32Array(bytesOf(model.get("visible")).slice().buffer);
    spacer.style.height = `${visible.length * ROW_H}px`;
    const total = cols.id ? cols.id.length : 0;
    count.textContent = `${visible.length.toLocaleString()} of ${total.toLocaleString()} records`;
    empty.hidden = visible.length > 0;
    const kind = model.get("kind");
    const which = kind === "any" ? "no records with errors" : kind ? "no records with this problem" : "no records";
    empty.textContent = !total ? "no records in this file" : which + (model.get("search") ? " match the search" : "");
    drawRows();
  }

  function drawColumns() {
    cols = model.get("columns") || {};
    fixed = new Set(cols.fixed || []);
    drawTable();
  }

  // the text, with every problem's [start, end) wrapped in a <mark>, all as text nodes
  function drawRecord() {
    const i = model.get("selected");
    if (i < 0 || !cols.id) {
      recordTitle.textContent = "Select a record to read it, its problems marked where they are.";
      textBox.replaceChildren();
      problemList.replaceChildren();
      toggleEdit(false);
      return;
    }
    const text = model.get("text");
    const spans = model.get("spans");
    const problems = model.get("problems");
    recordTitle.textContent = `record ${cols.id[i]}: ${problems.length ? problems.length + " problem(s)" : "no problems"}`;
    const parts = [];
    let at = 0;
    spans.forEach((sp, n) => {
      const start = Math.max(sp.start, at);
      if (start > at) parts.push(document.createTextNode(text.slice(at, start)));
      if (sp.end > start) {
        const mark = h("mark", `mv-mark mv-${sp.severity}`, text.slice(start, sp.end),
          { title: `${sp.kind}: ${sp.message}`, "data-span": n });
        parts.push(mark);
        at = sp.end;
      }
    });
    parts.push(document.createTextNode(text.slice(at)));
    textBox.replaceChildren(...parts);
    problemList.replaceChildren(...problems.map((p) => {
      const item = h("li", `mv-problem mv-${p.severity}`, `${p.kind}${p.step ? " (step " + p.step + ")" : ""}: ${p.message}`);
      const n = spans.findIndex((sp) => sp.start === p.offset && sp.kind === p.kind);
      if (n >= 0) item.addEventListener("click", () => textBox.querySelector(`[data-span="${n}"]`)?.scrollIntoView({ block: "center" }));
      return item;
    }));
    if (!editing) toggleEdit(false);
  }

  function drawSaveStatus() {
    const st = model.get("save_status") || {};
    saveStatus.textContent = st.message || "";
    saveStatus.className = `mv-save-status mv-${st.kind || "none"}`;
    // overwrite is offered for the file named, until the name changes
    overwriteBtn.hidden = !(st.kind === "exists" && st.path === savePath());
  }

  // ----- events ------------------------------------------------------------------------
  pathInput.addEventListener("input", drawSaveStatus);
  kindSelect.addEventListener("change", () => set("kind", kindSelect.value));
  let searchTimer = null;
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => set("search", searchInput.value), 150);
  });
  scroller.addEventListener("scroll", () => requestAnimationFrame(drawRows));
  rowsBox.addEventListener("click", (ev) => {
    const row = ev.target.closest(".mv-row");
    if (row) set("selected", Number(row.dataset.index));
  });
  scroller.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const at = visible.indexOf(model.get("selected"));
    const next = visible[Math.min(visible.length - 1, Math.max(0, at + (ev.key === "ArrowDown" ? 1 : -1)))];
    if (next !== undefined) set("selected", next);
    ev.preventDefault();
  });

  const handlers = [
    ["change:columns", drawColumns], ["change:visible", drawTable], ["change:kind", drawTable],
    ["change:search", drawTable], ["change:kinds", drawKinds],
    ["change:kind", () => { kindSelect.value = model.get("kind"); }],
    ["change:selected", () => { drawRows(); drawRecord(); }],
    ["change:text", drawRecord], ["change:spans", drawRecord], ["change:problems", drawRecord],
    ["change:notice", () => { notice.textContent = model.get("notice"); }],
    ["change:save_status", drawSaveStatus],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  searchInput.value = model.get("search");
  drawKinds();
  drawColumns();
  drawRecord();
  notice.textContent = model.get("notice");
  drawSaveStatus();
  return () => {
    for (const [name, fn] of handlers) model.off(name, fn);
    stopWatching();
  };
}

export default { render };
