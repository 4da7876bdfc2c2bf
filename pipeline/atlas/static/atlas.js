/* Deconv Atlas: search, sorting of a layer's units, keyboard navigation.
 * No fetch or XHR: the search index is a script (assets/search-index.js) that sets
 * window.ATLAS_INDEX, added to the page the first time the search box is used (it is megabytes
 * for a large model), so everything works from file:// and under any URL prefix.
 * Every link is built from the page's data-root ("", "../" or "../../"). */
(function () {
  "use strict";

  var root = document.body.getAttribute("data-root") || "";
  var MOSTLY = 0.5; // a class search lists units whose top images are at least this share of it
  var LIMIT = 30;

  function unitHref(layer, unit) {
    return root + "units/" + encodeURIComponent(layer) + "/" + unit + ".html";
  }

  function layerHref(layer) {
    return root + "layers/" + encodeURIComponent(layer) + ".html";
  }

  /* ---- search ---------------------------------------------------------------------- */

  var waiting = null; // callbacks while the index script loads

  function withIndex(callback) {
    if (window.ATLAS_INDEX) { callback(window.ATLAS_INDEX); return; }
    if (waiting) { waiting.push(callback); return; }
    waiting = [callback];
    var script = document.createElement("script");
    script.src = root + "assets/search-index.js";
    script.onload = function () {
      var callbacks = waiting;
      waiting = null;
      callbacks.forEach(function (cb) { cb(window.ATLAS_INDEX); });
    };
    script.onerror = function () { waiting = null; };
    document.head.appendChild(script);
  }

  function classMatches(index, query) {
    var matched = {};
    index.classes.forEach(function (name, label) {
      if (name.toLowerCase().indexOf(query) !== -1) matched[label] = true;
    });
    Object.keys(index.groups || {}).forEach(function (group) {
      var g = group.toLowerCase();
      // "dog" and "dogs" both find the group "dog"
      if (g.indexOf(query) !== -1 || (query.indexOf(g) === 0 && query.length - g.length <= 2)) {
        index.groups[group].forEach(function (label) { matched[label] = true; });
      }
    });
    return matched;
  }

  function search(index, query) {
    var q = query.trim().toLowerCase();
    if (!index || !q) return [];
    var layers = index.layers.map(function (l) { return l.toLowerCase(); });
    var unitQuery = q.match(/^([a-z0-9._-]+)\s*[\/#:\s]\s*(\d+)$/);
    if (unitQuery) {
      var at = layers.indexOf(unitQuery[1]);
      var unit = parseInt(unitQuery[2], 10);
      if (at !== -1 && unit < index.sizes[at]) {
        var label = index.layers[at];
        return [{ href: unitHref(label, unit), text: label + "/" + unit, note: "unit" }];
      }
    }
    var results = [];
    layers.forEach(function (layer, at) {
      if (layer === q) results.push({ href: layerHref(index.layers[at]), text: index.layers[at], note: "layer" });
    });
    var matched = classMatches(index, q);
    if (!Object.keys(matched).length) return results;
    var found = [];
    index.units.forEach(function (row) {
      var n = row[5], counts = row[6], hits = 0;
      if (!n) return;
      for (var i = 0; i < counts.length; i += 2) if (matched[counts[i]]) hits += counts[i + 1];
      if (hits) found.push({ layer: index.layers[row[0]], unit: row[1], share: hits / n, top: row[2] });
    });
    found.sort(function (a, b) { return b.share - a.share || a.layer.localeCompare(b.layer) || a.unit - b.unit; });
    var mostly = found.filter(function (f) { return f.share >= MOSTLY; });
    var shown = (mostly.length ? mostly : found).slice(0, LIMIT);
    return results.concat(shown.map(function (f) {
      var top = f.top >= 0 ? index.classes[f.top] : "";
      return { href: unitHref(f.layer, f.unit), text: f.layer + "/" + f.unit,
               note: Math.round(100 * f.share) + " % " + query.trim() + (top ? " · top: " + top : "") };
    }));
  }

  function setupSearch() {
    var input = document.getElementById("search");
    var list = document.getElementById("search-results");
    if (!input || !list) return;
    var form = input.form;
    function show(results) {
      list.textContent = "";
      results.forEach(function (r) {
        var li = document.createElement("li");
        var a = document.createElement("a");
        a.href = r.href;
        a.textContent = r.text;
        li.appendChild(a);
        if (r.note) {
          var note = document.createElement("span");
          note.className = "muted";
          note.textContent = " " + r.note;
          li.appendChild(note);
        }
        list.appendChild(li);
      });
      if (!results.length && input.value.trim()) {
        var none = document.createElement("li");
        none.className = "muted";
        none.textContent = "no unit or class matches";
        list.appendChild(none);
      }
      list.hidden = !input.value.trim();
    }
    input.addEventListener("focus", function () { withIndex(function () {}); });
    input.addEventListener("input", function () {
      withIndex(function (index) { show(search(index, input.value)); });
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      withIndex(function (index) {
        var first = search(index, input.value)[0];
        if (first) window.location.href = first.href;
      });
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { input.value = ""; show([]); input.blur(); }
    });
  }

  /* ---- layer page: sort and hide dead units ------------------------------------------- */

  function setupLayerControls() {
    var controls = document.querySelector("[data-controls]");
    var list = document.querySelector("ol.units");
    if (!controls || !list) return;
    controls.hidden = false;
    var sort = document.getElementById("sort");
    var hide = document.getElementById("hide-dead");
    var keys = {
      unit: function (li) { return parseFloat(li.dataset.unit); },
      peak: function (li) { return -parseFloat(li.dataset.peak); },
      selectivity: function (li) { return -parseFloat(li.dataset.selectivity); },
      sparsity: function (li) { return li.classList.contains("dead") ? Infinity : parseFloat(li.dataset.sparsity); }
    };
    sort.addEventListener("change", function () {
      var key = keys[sort.value] || keys.unit;
      var items = Array.prototype.slice.call(list.children);
      items.sort(function (a, b) { return key(a) - key(b) || keys.unit(a) - keys.unit(b); });
      items.forEach(function (li) { list.appendChild(li); });
    });
    hide.addEventListener("change", function () { list.classList.toggle("hide-dead", hide.checked); });
  }

  /* ---- keyboard: arrows follow rel=prev/next, "/" focuses the search ---------------- */

  function setupKeys() {
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) return;  // Shift may type "/"
      var target = event.target;
      if (target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName))) return;
      var rel = event.shiftKey ? null : { ArrowRight: "next", ArrowLeft: "prev" }[event.key];
      if (rel) {
        var link = document.querySelector('link[rel="' + rel + '"]');
        if (link) { event.preventDefault(); window.location.href = link.href; }
      } else if (event.key === "/") {
        var input = document.getElementById("search");
        if (input) { event.preventDefault(); input.focus(); }
      }
    });
  }

  setupSearch();
  setupLayerControls();
  setupKeys();
})();
