/* Deconv Atlas: tips. An element with data-tip="..." shows that text in one shared tooltip
 * (role=tooltip, tied to the element by aria-describedby while shown):
 *   - on hover with a mouse (hidden again when the pointer leaves),
 *   - on keyboard focus (templates give such elements tabindex="0" where it makes sense;
 *     hidden on blur),
 *   - on a tap or click, as a toggle that stays until Escape, another tap elsewhere, or a tap
 *     on the same element; Enter or Space toggle it on a focused element too.
 * A title= attribute would only ever show on hover, which a phone or a keyboard never does.
 * No fetch, no globals but ATLAS_TIPS (for tests); works from file:// and under any prefix. */
(function () {
  "use strict";

  var tip = null;        // the tooltip element
  var current = null;    // the element whose tip is shown
  var pinned = false;    // shown by a tap/click/key: stays until dismissed
  var wasOpen = false;   // at pointerdown: the pressed element's tip was already shown

  function tooltip() {
    if (tip) return tip;
    tip = document.createElement("div");
    tip.id = "atlas-tip";
    tip.className = "tip";
    tip.setAttribute("role", "tooltip");
    tip.hidden = true;
    document.body.appendChild(tip);
    return tip;
  }

  function target(node) {
    return node && node.closest ? node.closest("[data-tip]") : null;
  }

  function place(el) {
    var box = el.getBoundingClientRect();
    var t = tooltip();
    t.style.left = "0px";
    t.style.top = "0px";
    var w = t.offsetWidth, h = t.offsetHeight;
    var margin = 6, vw = document.documentElement.clientWidth;
    var left = Math.min(Math.max(margin, box.left + box.width / 2 - w / 2), vw - w - margin);
    var top = box.bottom + margin;  // below; above when there is no room below
    if (top + h > window.innerHeight - margin && box.top - h - margin > 0) top = box.top - h - margin;
    t.style.left = Math.max(margin, left) + "px";
    t.style.top = top + "px";
  }

  function show(el, pin) {
    if (current && current !== el) hide();
    var t = tooltip();
    t.textContent = el.getAttribute("data-tip");
    t.hidden = false;
    current = el;
    pinned = !!pin;
    el.setAttribute("aria-describedby", "atlas-tip");
    el.classList.add("tip-open");
    place(el);
  }

  function hide() {
    if (!current) return;
    current.removeAttribute("aria-describedby");
    current.classList.remove("tip-open");
    current = null;
    pinned = false;
    if (tip) tip.hidden = true;
  }

  document.addEventListener("pointerover", function (event) {
    if (event.pointerType !== "mouse") return;
    var el = target(event.target);
    if (el && el !== current && !pinned) show(el, false);
  });
  document.addEventListener("pointerout", function (event) {
    if (event.pointerType !== "mouse" || pinned || !current) return;
    var el = target(event.target);
    if (el === current && !current.contains(event.relatedTarget)) hide();
  });
  document.addEventListener("focusin", function (event) {
    var el = target(event.target);
    if (el && el === event.target && el !== current) show(el, false);
  });
  document.addEventListener("focusout", function (event) {
    if (current && event.target === current && !pinned) hide();
  });
  document.addEventListener("pointerdown", function (event) {
    var el = target(event.target);
    wasOpen = !!el && el === current && pinned;
    if (current && el !== current && !(tip && tip.contains(event.target))) hide();
  });
  document.addEventListener("click", function (event) {
    var el = target(event.target);
    if (!el) return;
    if (el.closest("a[href]")) return;  // a link with a tip: following it is the action
    if (wasOpen) { hide(); wasOpen = false; return; }
    show(el, true);
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && current) { hide(); return; }
    var el = target(event.target);
    if (el && el === event.target && (event.key === "Enter" || event.key === " ") &&
        !el.closest("a[href], button, input, summary")) {
      event.preventDefault();
      if (current === el && pinned) hide(); else show(el, true);
    }
  });
  window.addEventListener("resize", function () { if (current) place(current); });
  window.addEventListener("scroll", function () { if (current) place(current); }, true);

  window.ATLAS_TIPS = { show: show, hide: hide };
})();
