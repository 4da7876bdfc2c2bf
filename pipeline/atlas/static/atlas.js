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
  var THUMB = 32; // px: a search result's patch thumbnail
  /* The fields of a unit's row in the search index, by name (the order of
   * pipeline.atlas.render.SEARCH_UNIT_FIELDS, which a test holds equal to this). */
  var UNIT = { layer: 0, unit: 1, top_class: 2, top_share: 3, dead: 4, n_selectivity: 5,
               class_counts: 6 };
  var PAGE = { title: 0, path: 1, words: 2 };  // pipeline.atlas.navigation.SEARCH_PAGE_FIELDS

  function unitHref(layer, unit) {
    return root + "units/" + encodeURIComponent(layer) + "/" + unit + ".html";
  }

  function layerHref(layer) {
    return root + "layers/" + encodeURIComponent(layer) + ".html";
  }

  /* ---- the address: the reader's choices as key=value pairs in the hash ---------------- */

  /* "#unit-17&curve=lifted&sort=peak": pairs, and at most one bare anchor (an element's id,
   * linked from another page). Choices live here so that a link, a bookmark or Back shows the
   * page as the reader left it. */
  function parseHash(hash) {
    var state = { pairs: {}, anchor: "" };
    (hash || "").replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var eq = part.indexOf("=");
      if (eq === -1) { state.anchor = decodeURIComponent(part); return; }
      state.pairs[decodeURIComponent(part.slice(0, eq))] = decodeURIComponent(part.slice(eq + 1));
    });
    return state;
  }

  function formatHash(state) {
    var parts = state.anchor ? [encodeURIComponent(state.anchor)] : [];
    Object.keys(state.pairs).forEach(function (key) {
      var value = state.pairs[key];
      if (value !== null && value !== undefined && value !== "") {
        parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(value));
      }
    });
    return parts.join("&");
  }

  /* Set (or, with null, drop) some pairs of the address; ``push`` makes a history entry. */
  function updateHash(updates, push) {
    var state = parseHash(window.location.hash);
    Object.keys(updates).forEach(function (key) { state.pairs[key] = updates[key]; });
    var hash = formatHash(state);
    if (push) { window.location.hash = hash; return; }
    window.history.replaceState(null, "", window.location.href.split("#")[0] + (hash ? "#" + hash : ""));
  }

  /* Pairs every link to another atlas page carries (the display choices), and those only the
   * previous / next links carry (a unit page's method and maps). */
  var carried = { all: {}, rel: {} };
  var CARRIED_KEYS = ["curve", "scale", "tiles", "method", "maps"];

  /* ``href`` with the carried pairs in its hash (and the previous / next ones for ``rel``);
   * unchanged when it leads out of the atlas or to this page. */
  function withCarried(href, rel) {
    if (!href || href.charAt(0) === "#" || /^[a-z][a-z0-9+.-]*:/i.test(href)) return href;
    var at = href.indexOf("#");
    var base = at === -1 ? href : href.slice(0, at);
    if (!/\.html$/.test(base)) return href;
    var state = parseHash(at === -1 ? "" : href.slice(at));
    CARRIED_KEYS.forEach(function (key) { delete state.pairs[key]; });
    [carried.all, rel === "prev" || rel === "next" ? carried.rel : {}].forEach(function (pairs) {
      Object.keys(pairs).forEach(function (key) { state.pairs[key] = pairs[key]; });
    });
    var hash = formatHash(state);
    return base + (hash ? "#" + hash : "");
  }

  function carry() {
    var links = document.querySelectorAll('a[href], link[rel="prev"], link[rel="next"]');
    Array.prototype.forEach.call(links, function (link) {
      var href = link.getAttribute("href");
      var carriedHref = withCarried(href, link.getAttribute("rel"));
      if (carriedHref !== href) link.setAttribute("href", carriedHref);
    });
  }

  /* ---- how pictures are drawn: curve and scale of projections, on every page with them;
   * what a tile shows first (its projections, or the unit's optimised input) ------------- */

  var DISPLAY = { curve: ["linear", "lifted"], scale: ["own", "common"],  // default first
                  tiles: ["projections", "optimised"] };

  function setupDisplay() {
    var html = document.documentElement;
    // radio groups, and switches: a checkbox that, checked, sets its name to its value
    var inputs = document.querySelectorAll('[data-display] input[type="radio"], input[type="checkbox"][data-display]');
    Array.prototype.forEach.call(document.querySelectorAll(".optimised-switch"), function (label) {
      label.hidden = false;  // without the script it would do nothing
    });

    function apply(pairs) {
      carried.all = {};
      Object.keys(DISPLAY).forEach(function (key) {
        var value = DISPLAY[key].indexOf(pairs[key]) > 0 ? pairs[key] : DISPLAY[key][0];
        if (value === DISPLAY[key][0]) html.removeAttribute("data-" + key);
        else { html.setAttribute("data-" + key, value); carried.all[key] = value; }
        Array.prototype.forEach.call(inputs, function (input) {
          if (input.name === key) input.checked = input.value === value;
        });
      });
      carry();
    }

    Array.prototype.forEach.call(inputs, function (input) {
      input.addEventListener("change", function () {
        var updates = {};
        var value = input.type === "checkbox" && !input.checked ? DISPLAY[input.name][0] : input.value;
        updates[input.name] = value === DISPLAY[input.name][0] ? null : value;
        updateHash(updates, false);
        apply(parseHash(window.location.hash).pairs);
      });
    });
    window.addEventListener("hashchange", function () { apply(parseHash(window.location.hash).pairs); });
    apply(parseHash(window.location.hash).pairs);
    var anchor = parseHash(window.location.hash).anchor;  // "#unit-17&curve=lifted" scrolls too
    if (anchor && window.location.hash.indexOf("&") !== -1) {
      var target = document.getElementById(anchor);
      if (target) target.scrollIntoView();
    }
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

  /* Words of a query or a class name: lower case, with spaces, underscores and hyphens alike
   * ("Blue-Disc", "blue disc" and "blue_disc" are the words "blue" and "disc"). */
  function words(text) {
    return text.toLowerCase().split(/[\s_\-]+/).filter(Boolean);
  }

  /* A query word and its singular forms: "rings" -> ring, "boxes" -> box, "puppies" -> puppy. */
  function forms(word) {
    var out = [word];
    if (word.length > 3 && /s$/.test(word) && !/ss$/.test(word)) out.push(word.slice(0, -1));
    if (word.length > 4 && /(s|x|z|ch|sh)es$/.test(word)) out.push(word.slice(0, -2));
    if (word.length > 4 && /ies$/.test(word)) out.push(word.slice(0, -3) + "y");
    return out;
  }

  /* Every query word (or one of its singular forms) is part of a word of the name, so
   * "stripe", "stripes" and "horizontal stripe" all find "horizontal_stripes", and "discs"
   * finds "blue_disc"; "bluedisc" still finds it through the name without separators. */
  function nameMatches(name, queryWords) {
    var nameWords = words(name);
    var all = queryWords.every(function (q) {
      return forms(q).some(function (f) {
        return nameWords.some(function (w) { return w.indexOf(f) !== -1; });
      });
    });
    return all || (queryWords.length === 1 && nameWords.join("").indexOf(queryWords[0]) !== -1);
  }

  function classMatches(index, queryWords) {
    var matched = {};
    index.classes.forEach(function (name, label) {
      if (nameMatches(name, queryWords)) matched[label] = true;
    });
    Object.keys(index.groups || {}).forEach(function (group) {
      if (nameMatches(group, queryWords)) {
        index.groups[group].forEach(function (label) { matched[label] = true; });
      }
    });
    return matched;
  }

  /* The first cell (rank 1) of a live unit's patches grid, tiles/<layer>/<unit:04d>-patches.jpg:
   * {src, cw, ch, sw, sh} from the index's per-layer cell and sheet sizes; null for a dead unit
   * (it has no file) or a layer whose sizes are unknown. */
  function thumbOf(index, at, unit, dead) {
    var cell = (index.cells || [])[at];
    if (dead || !cell || !cell[0] || !cell[1] || !cell[2] || !cell[3]) return null;
    var digits = String(unit);
    while (digits.length < 4) digits = "0" + digits;
    return { src: root + "tiles/" + encodeURIComponent(index.layers[at]) + "/" + digits + "-patches.jpg",
             cw: cell[0], ch: cell[1], sw: cell[2], sh: cell[3] };
  }

  function isDead(index, at, unit) {
    var row = index.units.find(function (r) { return r[UNIT.layer] === at && r[UNIT.unit] === unit; });
    return !row || !!row[UNIT.dead];
  }

  function unitResult(index, at, unit) {
    var label = index.layers[at];
    return { href: unitHref(label, unit), text: label + "/" + unit, note: "unit",
             thumb: thumbOf(index, at, unit, isDead(index, at, unit)) };
  }

  /* The experiments' pages whose title or words hold every query word (or its singular):
   * "occlusion", "rotation", "training", "figure 7". */
  function pageResults(index, queryWords) {
    return (index.pages || []).filter(function (page) {
      return queryWords.every(function (q) {
        return forms(q).some(function (f) {
          return words(page[PAGE.words]).some(function (w) { return w.indexOf(f) === 0; });
        });
      });
    }).map(function (page) {
      return { href: root + page[PAGE.path].split("/").map(encodeURIComponent).join("/"),
               text: page[PAGE.title], note: "experiment" };
    });
  }

  /* Results for a query: a list of {href, text, note}, and `more` when it was cut at LIMIT,
   * or `none`, a sentence saying why nothing matched. */
  function search(index, query, currentLayer) {
    var q = query.trim().toLowerCase();
    var out = { results: [], more: 0, none: "" };
    if (!index || !q) return out;
    var layers = index.layers.map(function (l) { return l.toLowerCase(); });
    // "7" or "#7": unit 7 of this page's layer, or of every layer on the index
    var number = q.match(/^#?\s*(\d+)$/);
    if (number) {
      var n = parseInt(number[1], 10);
      var here = currentLayer ? layers.indexOf(currentLayer.toLowerCase()) : -1;
      if (here !== -1) {
        if (n < index.sizes[here]) out.results.push(unitResult(index, here, n));
        else out.none = index.layers[here] + " has units 0–" + (index.sizes[here] - 1);
      } else {
        layers.forEach(function (layer, at) {
          if (n < index.sizes[at]) out.results.push(unitResult(index, at, n));
        });
        if (!out.results.length) out.none = "no layer has a unit " + n;
      }
      return out;
    }
    // "conv3/7", "conv3 7", "conv3#7", "conv3:7"
    var unitQuery = q.match(/^([a-z0-9._-]+?)\s*(?:[\/#:]|\s)\s*#?(\d+)$/);
    if (unitQuery) {
      var at = layers.indexOf(unitQuery[1]);
      var unit = parseInt(unitQuery[2], 10);
      if (at !== -1) {
        if (unit < index.sizes[at]) out.results.push(unitResult(index, at, unit));
        else out.none = index.layers[at] + " has units 0–" + (index.sizes[at] - 1);
        return out;
      }
    }
    layers.forEach(function (layer, at) {  // "conv3", or "conv" for every conv layer
      if (layer.indexOf(q) === 0) out.results.push({ href: layerHref(index.layers[at]), text: index.layers[at], note: "layer" });
    });
    var queryWords = words(q);
    out.results = out.results.concat(pageResults(index, queryWords));
    var matched = classMatches(index, queryWords);
    var names = Object.keys(matched).map(function (label) { return index.classes[label]; });
    var found = [];
    if (names.length) {
      index.units.forEach(function (row) {
        var n = row[UNIT.n_selectivity], counts = row[UNIT.class_counts], hits = 0;
        if (!n) return;
        for (var i = 0; i < counts.length; i += 2) if (matched[counts[i]]) hits += counts[i + 1];
        if (hits) found.push({ layer: index.layers[row[UNIT.layer]], unit: row[UNIT.unit], share: hits / n,
                               top: row[UNIT.top_class],
                               thumb: thumbOf(index, row[UNIT.layer], row[UNIT.unit], row[UNIT.dead]) });
      });
    }
    found.sort(function (a, b) { return b.share - a.share || a.layer.localeCompare(b.layer) || a.unit - b.unit; });
    var mostly = found.filter(function (f) { return f.share >= MOSTLY; });
    var all = mostly.length ? mostly : found;
    var what = names.length === 1 ? names[0] : names.length + " classes";
    out.more = Math.max(0, all.length - LIMIT);
    out.results = out.results.concat(all.slice(0, LIMIT).map(function (f) {
      var top = f.top >= 0 ? index.classes[f.top] : "";
      return { href: unitHref(f.layer, f.unit), text: f.layer + "/" + f.unit, thumb: f.thumb,
               note: Math.round(100 * f.share) + " % " + what +
                     (top && top !== what ? " · top: " + top : "") };
    }));
    if (!out.results.length) out.none = "no unit or class matches";
    return out;
  }

  /* The search box is a combobox (ARIA 1.2): the focus stays in the box, ArrowUp/ArrowDown
   * move a highlight through the listbox of results (wrapping), Enter opens the highlighted
   * result or the first, Escape or a click outside closes the list. */
  function setupSearch() {
    var input = document.getElementById("search");
    var list = document.getElementById("search-results");
    var status = document.getElementById("search-status");
    if (!input || !list) return;
    var form = input.form;
    var currentLayer = document.body.getAttribute("data-layer") || "";
    var shown = [];   // the results in the list
    var active = -1;  // the highlighted one

    function setOpen(open) {
      list.hidden = !open;
      input.setAttribute("aria-expanded", open ? "true" : "false");
      if (!open) highlight(-1);
    }

    function highlight(at) {
      var options = list.querySelectorAll('[role="option"]:not([aria-disabled])');
      if (active >= 0 && options[active]) options[active].setAttribute("aria-selected", "false");
      active = at;
      if (at >= 0 && options[at]) {
        options[at].setAttribute("aria-selected", "true");
        input.setAttribute("aria-activedescendant", options[at].id);
        options[at].scrollIntoView({ block: "nearest" });
      } else {
        active = -1;
        input.removeAttribute("aria-activedescendant");
      }
    }

    /* THUMB px square at most: the unit's first patch, a CSS sprite (the box hides the rest
     * of the grid file, the image is scaled so that one cell fills the box). */
    function thumbBox(t) {
      var scale = THUMB / Math.max(t.cw, t.ch);
      var box = document.createElement("span");
      box.className = "search-thumb";
      box.style.width = Math.round(t.cw * scale) + "px";
      box.style.height = Math.round(t.ch * scale) + "px";
      var img = document.createElement("img");
      img.src = t.src;
      img.alt = "";
      img.decoding = "async";
      img.style.width = (t.sw * scale) + "px";
      img.style.height = (t.sh * scale) + "px";
      box.appendChild(img);
      return box;
    }

    function note(li, text, cls) {
      var span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      li.appendChild(span);
    }

    function show(found) {
      highlight(-1);
      list.textContent = "";
      shown = found.results;
      shown.forEach(function (r, i) {
        var li = document.createElement("li");
        li.id = "search-option-" + i;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        var a = document.createElement("a");
        a.href = withCarried(r.href);  // the reader's display choices follow a result too
        a.tabIndex = -1;  // the focus stays in the box; the list is reached with the arrows
        if (r.thumb) a.appendChild(thumbBox(r.thumb));
        a.appendChild(document.createTextNode(r.text));
        li.appendChild(a);
        if (r.note) note(li, " " + r.note, "muted");
        list.appendChild(li);
      });
      var extra = found.more ? found.more + " more — refine the search" : found.none;
      if (extra) {
        var li = document.createElement("li");
        li.className = "muted " + (found.more ? "more" : "none");
        li.setAttribute("role", "option");
        li.setAttribute("aria-disabled", "true");
        li.textContent = extra;
        list.appendChild(li);
      }
      var n = shown.length;
      if (status) {
        status.textContent = !input.value.trim() ? "" :
          n ? n + (n === 1 ? " result" : " results") + (found.more ? ", " + found.more + " more" : "")
            : found.none;
      }
      setOpen(!!input.value.trim());
    }

    function update() {
      var query = input.value;
      withIndex(function (index) {
        if (input.value === query) show(search(index, query, currentLayer));
      });
    }

    function open(result) { if (result) window.location.href = withCarried(result.href); }

    input.addEventListener("focus", function () {
      withIndex(function () {});
      if (input.value.trim() && list.hidden) update();
    });
    input.addEventListener("input", update);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (active >= 0 && shown[active]) { open(shown[active]); return; }
      withIndex(function (index) { open(search(index, input.value, currentLayer).results[0]); });
    });
    input.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (list.hidden) { if (input.value.trim()) update(); return; }
        var n = shown.length;
        if (!n) return;
        var down = event.key === "ArrowDown";
        highlight(active < 0 ? (down ? 0 : n - 1) : (active + (down ? 1 : n - 1)) % n);
      } else if (event.key === "Escape") {
        if (!list.hidden) { event.preventDefault(); setOpen(false); }
        else if (input.value) { event.preventDefault(); input.value = ""; show(search(null, "")); }
        else input.blur();
      }
    });
    // a click or tap anywhere outside the search closes its results; so does tabbing away
    document.addEventListener("pointerdown", function (event) {
      if (!form.contains(event.target)) setOpen(false);
    });
    form.addEventListener("focusout", function (event) {
      if (event.relatedTarget && !form.contains(event.relatedTarget)) setOpen(false);
    });
    list.addEventListener("mousemove", function (event) {
      var li = event.target.closest && event.target.closest('[role="option"]:not([aria-disabled])');
      if (!li) return;
      var options = Array.prototype.slice.call(list.querySelectorAll('[role="option"]:not([aria-disabled])'));
      var at = options.indexOf(li);
      if (at !== active) highlight(at);
    });
  }

  /* ---- layer page: sort and hide dead units, kept in the URL hash ------------------- */

  function percent(share) {
    var p = 100 * share;
    return (p > 0 && p < 1 ? p.toFixed(1) : Math.round(p)) + " %";
  }

  /* The hash holds the controls' state ("#sort=peak&hide-dead=1"); any other hash is an
   * anchor ("#unit-17", linked from the unit pages) and means the default order. */
  function readHash() {
    var pairs = parseHash(window.location.hash).pairs;
    return { sort: pairs.sort || "unit", hideDead: pairs["hide-dead"] === "1" };
  }

  function setupLayerControls() {
    var controls = document.querySelector("[data-controls]");
    var list = document.querySelector("ol.units");
    if (!controls || !list) return;
    controls.hidden = false;
    var sort = document.getElementById("sort");
    var hide = document.getElementById("hide-dead");  // only when the layer has dead units
    var items = Array.prototype.slice.call(list.children);
    function num(li, key) {
      var v = parseFloat(li.getAttribute("data-" + key));
      return isNaN(v) ? null : v;
    }
    var keys = {
      unit: function (li) { return num(li, "unit"); },
      peak: function (li) { var v = num(li, "peak"); return v === null ? Infinity : -v; },
      selectivity: function (li) {
        var v = num(li, "selectivity");
        return li.classList.contains("dead") || v === null ? Infinity : -v;
      },
      sparsity: function (li) {
        var v = num(li, "sparsity");
        return li.classList.contains("dead") || v === null ? Infinity : v;
      },
      weak: function (li) {  // weak units first, weakest first; then the rest by number
        var v = num(li, "peak");
        return li.classList.contains("weak") && v !== null ? v : Infinity;
      }
    };
    // each card shows the value it is sorted by; the peak text is the page's own
    var labels = {
      selectivity: function (li) {
        var v = num(li, "selectivity");
        return li.classList.contains("dead") || v === null ? "no class" : percent(v) + " one class";
      },
      sparsity: function (li) {
        var v = num(li, "sparsity");
        return v === null ? "—" : "fires in " + percent(v);
      }
    };
    items.forEach(function (li) {
      var span = li.querySelector(".peak");
      if (span) span.setAttribute("data-peak-text", span.textContent);
    });

    function apply(state) {
      var name = keys[state.sort] ? state.sort : "unit";
      sort.value = name;
      var key = keys[name];
      var order = items.slice().sort(function (a, b) {
        var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) || keys.unit(a) - keys.unit(b);
      });
      // move cards only when the order changes (so an anchor's scroll position stays put)
      var moved = order.some(function (li, i) { return list.children[i] !== li; });
      order.forEach(function (li) {
        if (moved) list.appendChild(li);
        var span = li.querySelector(".peak");
        if (span) span.textContent = labels[name] ? labels[name](li) : span.getAttribute("data-peak-text");
      });
      if (hide) hide.checked = state.hideDead;
      list.classList.toggle("hide-dead", !!(hide && state.hideDead));
    }

    function save() {
      // a new history entry, so Back returns to the previous order (hashchange applies it)
      updateHash({ sort: sort.value !== "unit" ? sort.value : null,
                   "hide-dead": hide && hide.checked ? "1" : null }, true);
    }

    sort.addEventListener("change", save);
    if (hide) hide.addEventListener("change", save);
    window.addEventListener("hashchange", function () { apply(readHash()); });
    apply(readHash());
  }

  /* ---- unit page: the chosen projection method and the maps toggle follow the reader ---- */

  /* Kept in the address (#method=guided&maps=0) and carried by the previous / next links, so
   * comparing one method across units does not mean choosing it again on every page. */
  function setupUnitOptions() {
    var methods = document.querySelectorAll('input[name="method"]');
    var maps = document.querySelector('input[name="heat"]');
    if (!methods.length && !maps) return;
    function apply(state) {
      Array.prototype.forEach.call(methods, function (input) {
        input.checked = state.method ? input.value === state.method : input.defaultChecked;
      });
      if (maps) maps.checked = state.maps !== "0";
      carried.rel = current();
      carry();
    }

    function current() {
      var pairs = {};
      Array.prototype.forEach.call(methods, function (input) {
        if (input.checked && !input.defaultChecked) pairs.method = input.value;
      });
      if (maps && !maps.checked) pairs.maps = "0";
      return pairs;
    }

    function save() {
      var pairs = current();
      updateHash({ method: pairs.method || null, maps: pairs.maps || null }, false);
      carried.rel = pairs;
      carry();
    }

    Array.prototype.forEach.call(methods, function (input) { input.addEventListener("change", save); });
    if (maps) maps.addEventListener("change", save);
    apply(parseHash(window.location.hash).pairs);
  }

  /* ---- unit page: click a picture for its full resolution -------------------------------- */

  /* Every cell is a rectangle of a sheet image scaled to its card. Clicking one shows it alone,
   * enlarged by the largest whole factor that fits the window (at least its stored size, each
   * stored pixel a sharp square), with the activation map and receptive field if it has them. */
  function setupZoom() {
    var cells = document.querySelectorAll(".trio > .pcell, .trio > .pcrop, .trio > .thumb-wrap, .unit-filter .pcrop, .optimised-pictures .pcrop");
    if (!cells.length) return;
    var opener = null;

    // The page behind the picture is inert (no focus, no clicks) while it is open.
    function setInert(on) {
      Array.prototype.forEach.call(document.querySelectorAll("header.site, footer.site, main > :not(.zoom)"),
        function (element) { element.inert = on; });
    }

    function close() {
      var open = document.querySelector(".zoom");
      if (open) open.remove();
      setInert(false);
      if (opener) opener.focus();
      opener = null;
    }

    function show(cell) {
      var source = cell.classList.contains("thumb-wrap") ? cell.querySelector(".crop") : cell;
      var style = window.getComputedStyle(source);
      var pixels = source.classList.contains("pcell") || source.classList.contains("pcrop");
      // a drawn picture's size is its CSS variables (set on it or on its row); a thumbnail's
      // is data-w / data-h
      var w = pixels ? +style.getPropertyValue("--w") : +source.dataset.w;
      var h = pixels ? +style.getPropertyValue("--h") : +source.dataset.h;
      if (!w || !h) return;
      var factor = Math.max(1, Math.floor(Math.min(0.92 * window.innerWidth / w,
                                                    0.8 * window.innerHeight / h)));
      var overlay = document.createElement("div");
      overlay.className = "zoom";
      overlay.setAttribute("role", "dialog");
      overlay.setAttribute("aria-modal", "true");
      var image = source.querySelector("img");
      overlay.setAttribute("aria-label", (image && image.alt) || "picture");
      var copy = cell.cloneNode(true);
      copy.removeAttribute("tabindex");
      copy.removeAttribute("role");
      copy.classList.add("zoomed");
      if (pixels) {
        // the copy leaves its row: it takes the geometry it inherited, at the new factor
        ["--w", "--h", "--sw", "--sh", "--x", "--y", "--r-linear", "--r-lifted"].forEach(function (name) {
          copy.style.setProperty(name, style.getPropertyValue(name));
        });
        copy.style.setProperty("--k", factor);  // the sheet is enlarged by the same factor
      } else {
        copy.style.width = (w * factor) + "px";
      }
      var caption = document.createElement("p");
      caption.textContent = ((image && image.alt) || "") + " · " + w + " × " + h +
        " px stored, shown × " + factor + " · click or Esc to close";
      var button = document.createElement("button");
      button.type = "button";
      button.className = "zoom-close";
      button.textContent = "Close";
      overlay.appendChild(copy);
      overlay.appendChild(caption);
      overlay.appendChild(button);
      overlay.addEventListener("click", close);
      // inside <main>, so the page's choices (method, activation maps) apply to the copy too
      document.querySelector("main").appendChild(overlay);
      setInert(true);
      opener = cell;
      button.focus();
    }

    Array.prototype.forEach.call(cells, function (cell) {
      cell.setAttribute("tabindex", "0");
      cell.setAttribute("role", "button");
      cell.addEventListener("click", function () { show(cell); });
      cell.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); show(cell); }
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && document.querySelector(".zoom")) {
        event.preventDefault();
        close();
      }
    }, true);
  }

  /* ---- keyboard: arrows follow rel=prev/next, "/" focuses the search ---------------- */

  function setupKeys() {
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) return;  // Shift may type "/"
      if (document.querySelector(".zoom")) return;  // an enlarged picture is open
      var target = event.target;
      // keys typed into a text box, a select or a radio group (where arrows choose) are theirs;
      // a checkbox has no use for arrows
      if (target && (target.isContentEditable || /^(SELECT|TEXTAREA)$/.test(target.tagName) ||
          (target.tagName === "INPUT" && !/^(checkbox|button|submit|reset)$/.test(target.type)))) return;
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
  setupDisplay();
  setupLayerControls();
  setupUnitOptions();
  setupZoom();
  setupKeys();
})();
