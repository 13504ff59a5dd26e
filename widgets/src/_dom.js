// Small DOM helpers shared by the widgets. Text is only ever set with textContent:
// model output and user data are untrusted and must never be parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** An HTML element with a class, optional text (as text) and attributes. */
export function h(tag, className = "", text = null, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null && text !== undefined) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** An SVG element with attributes (text, if any, set as textContent). */
export function s(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null && text !== undefined) node.textContent = String(text);
  return node;
}

/** A button that calls onClick; `title` is a tooltip. */
export function button(label, title, onClick, className = "mv-button") {
  const b = h("button", className, label, { type: "button", title });
  b.addEventListener("click", onClick);
  return b;
}

/** Bytes from a widget trait: ipywidgets hands over a DataView (or ArrayBuffer). */
export function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
}

/** The value of a CSS custom property on `el`, with a fallback. */
export function cssVar(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

/** Shorten text for a drawing label (the full text goes into a tooltip). */
export function clip(text, n) {
  const str = String(text);
  return str.length > n ? str.slice(0, n - 1) + "…" : str;
}

/**
 * Mark `root` when its model has no kernel behind it: the view was drawn from widget
 * state saved in the notebook, and its kernel is gone (or went away while it is shown).
 * Then a line says so and the controls stop taking clicks. Python sets the trait `_ref`
 * to the model's own id, so the widget manager can hand over the model itself, whose
 * `comm_live` tells. Returns the function that stops watching (for the view's cleanup).
 */
export function watchKernel(model, root) {
  const ref = model.get("_ref");
  const manager = model.widget_manager;
  let real = null;
  let stopped = false;
  const banner = h("div", "mv-kernel-gone", "This widget was saved with the notebook and its kernel is gone: " +
    "its controls do nothing. Run the cell again to use it.", { role: "alert" });
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
    }).catch(() => {});
  }
  return () => {
    stopped = true;
    if (real) real.off("comm_live_update", update);
  };
}
