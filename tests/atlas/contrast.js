/* The WCAG contrast ratio of every visible text of the page against what is painted behind it:
 * [{ratio, what, color, fg, bg}], lowest first. The backgrounds of the ancestors are painted
 * top-down; an element with opacity is its content over what is behind it, mixed with that by
 * its opacity (exact for flat colours). SVG text is measured by its fill, inputs by their value
 * and placeholder. Evaluated by tests/atlas/test_browser_controls.py. */
() => {
  function parse(c) {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) {
      const n = c.match(/color\(srgb ([^)]+)\)/);
      if (!n) return null;
      const p = n[1].replace("/", " ").split(/\s+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  const over = (top, under) => [0, 1, 2].map(i => top[3] * top[i] + (1 - top[3]) * under[i]);
  const mix = (a, b, t) => [0, 1, 2].map(i => t * a[i] + (1 - t) * b[i]);
  function lum(rgb) {
    const c = rgb.map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  function paint(chain, i, under, text) {
    if (i === chain.length) return text ? over(text, under) : under;
    const style = getComputedStyle(chain[i]);
    const bg = parse(style.backgroundColor) || [0, 0, 0, 0];
    const inside = paint(chain, i + 1, over(bg, under), text);
    return mix(inside, under, parseFloat(style.opacity));
  }
  function visible(el) {
    const r = el.getBoundingClientRect();
    if (r.width < 2 || r.height < 2 || r.right <= 0 || r.bottom <= 0) return false;
    if (el.closest(".visually-hidden, [hidden], svg title, option, script, style, title")) return false;
    if (getComputedStyle(el).visibility !== "visible") return false;
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === "none") return false;
      if (s.clip !== "auto" || s.clipPath !== "none") return false;
    }
    return true;
  }
  const canvas = [255, 255, 255];
  const rows = [];
  function check(el, color, what) {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.unshift(e);
    const text = parse(color);
    const fg = paint(chain, 0, canvas, text);
    const bg = paint(chain, 0, canvas, null);
    rows.push({ ratio: ratio(fg, bg), what: what, color: color,
                fg: fg.map(Math.round).join(","), bg: bg.map(Math.round).join(",") });
  }
  function name(el) {
    const cls = (el.getAttribute("class") || "").trim();
    const holder = el.parentElement && el.parentElement.closest("[id]");
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (cls ? "." + cls.split(/\s+/).join(".") : "") +
      (el.hasAttribute("aria-current") ? "[aria-current]" : "") +
      (el.closest(".dead") ? " in .dead" : "") + (holder ? " in #" + holder.id : "");
  }
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const control = /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(el.tagName);
    if (!own && !control) continue;
    if (!visible(el)) continue;
    const style = getComputedStyle(el);
    const isSvg = el instanceof SVGElement;
    const label = name(el) + ": " + (el.textContent || el.value || "").trim().slice(0, 30);
    if (control && el.type === "checkbox") continue;
    if (!control || el.value || el.tagName === "SELECT") check(el, isSvg ? style.fill : style.color, label);
    if (el.placeholder && !el.value) check(el, getComputedStyle(el, "::placeholder").color, label + " ::placeholder");
  }
  rows.sort((a, b) => a.ratio - b.ratio);
  return rows;
}
