// The job page's tools. Lines are the server's `.line` divs (numbered ones start with an
// `a.ln`; `data-t` on a line: when the server received it, unix ms, until the next such line);
// sections are `details.section`. Follow the log or not, jump to the first error line, show
// each line's time, search the lines shown, and search the whole log on the server.
(function () {
  var log = document.getElementById("log");
  if (!log) return;
  var follow = document.getElementById("follow");
  function openAround(el) {
    for (var d = el.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
  }
  function stopFollowing() {
    if (follow && log.dataset.autoscroll === "true") follow.click();
  }
  // A line's text without its number and time.
  function lineText(l) {
    var t = "";
    l.childNodes.forEach(function (n) {
      if (!(n.nodeType === 1 && (n.classList.contains("ln") || n.classList.contains("ts")))) t += n.textContent;
    });
    return t;
  }
  if (follow) {
    follow.addEventListener("click", function () {
      var on = log.dataset.autoscroll !== "true";
      log.dataset.autoscroll = on ? "true" : "false";
      follow.setAttribute("aria-pressed", on ? "true" : "false");
      follow.textContent = on ? "⏸ Stop following" : "▶ Follow the log";
      if (on) window.scrollTo(0, document.body.scrollHeight);
    });
  }
  // A link to a line (`#L120`) opens the sections around it.
  function revealHash() {
    var el = location.hash.length > 1 && document.getElementById(location.hash.slice(1));
    if (!el || !el.classList.contains("line")) return;
    stopFollowing();
    openAround(el);
    el.scrollIntoView({ block: "center" });
  }
  window.addEventListener("hashchange", revealHash);
  revealHash();

  var pattern = /\b(error|fatal|failed|failure|exception|panicked)\b/i;
  document.getElementById("first-error").addEventListener("click", function () {
    var lines = log.querySelectorAll(".line");
    for (var i = 0; i < lines.length; i++) {
      var l = lines[i];
      var text = lineText(l);
      // A command's echo (`$ grep error`) is not an error.
      if (/^\s*\$ /.test(text)) continue;
      if (pattern.test(text) || l.querySelector(".fg-1, .fg-9")) {
        openAround(l);
        stopFollowing();
        var anchor = l.id || (l.querySelector("[id]") || {}).id;
        if (anchor) history.replaceState(null, "", "#" + anchor);
        l.classList.add("first-error");
        l.scrollIntoView({ block: "center" });
        return;
      }
    }
    document.getElementById("first-error-none").hidden = false;
  });

  // Times: a `.ts` after each line's number, in local time; lines added live get theirs too.
  var tsButton = document.getElementById("timestamps");
  var lastT = null;
  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  function stamp() {
    if (!log.classList.contains("show-ts")) return;
    var lines = log.querySelectorAll(".line:not([data-s])");
    for (var i = 0; i < lines.length; i++) {
      var l = lines[i];
      l.setAttribute("data-s", "");
      if (l.dataset.t) lastT = Number(l.dataset.t);
      var ts = document.createElement("span");
      ts.className = "ts";
      if (lastT !== null && l.id) {
        var d = new Date(lastT);
        ts.textContent = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
        ts.title = d.toISOString();
      }
      var ln = l.firstElementChild;
      if (ln && ln.classList.contains("ln")) ln.after(ts);
      else l.prepend(ts);
    }
  }
  if (!log.querySelector("[data-t]") && log.dataset.follow !== "true") {
    tsButton.disabled = true;
    tsButton.title = "No times were recorded for this log";
  }
  tsButton.addEventListener("click", function () {
    var on = !log.classList.contains("show-ts");
    log.classList.toggle("show-ts", on);
    tsButton.setAttribute("aria-pressed", on ? "true" : "false");
    stamp();
  });
  // The live tail calls this after adding lines.
  window.pisteLogGrew = stamp;

  // Search on the page: matching lines marked, the text highlighted, Enter / Shift+Enter move.
  var input = document.getElementById("log-search");
  var count = document.getElementById("search-count");
  var hits = [];
  var current = -1;
  var searched = "";
  var timer = null;
  function clearHits() {
    log.querySelectorAll("mark.hit").forEach(function (m) {
      var p = m.parentNode;
      p.replaceChild(document.createTextNode(m.textContent), m);
      p.normalize();
    });
    log.querySelectorAll(".line.match").forEach(function (l) {
      l.classList.remove("match", "current");
    });
    hits = [];
    current = -1;
  }
  function highlight(l, q) {
    var walker = document.createTreeWalker(l, NodeFilter.SHOW_TEXT, {
      acceptNode: function (n) {
        return n.parentElement.closest(".ln, .ts") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT;
      },
    });
    var nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    nodes.forEach(function (n) {
      var text = n.nodeValue;
      var lower = text.toLowerCase();
      if (lower.length !== text.length) return;
      var at = lower.indexOf(q);
      if (at < 0) return;
      var frag = document.createDocumentFragment();
      var from = 0;
      while (at >= 0) {
        frag.appendChild(document.createTextNode(text.slice(from, at)));
        var m = document.createElement("mark");
        m.className = "hit";
        m.textContent = text.slice(at, at + q.length);
        frag.appendChild(m);
        from = at + q.length;
        at = lower.indexOf(q, from);
      }
      frag.appendChild(document.createTextNode(text.slice(from)));
      n.parentNode.replaceChild(frag, n);
    });
  }
  function go(i) {
    if (!hits.length) return;
    if (current >= 0) hits[current].classList.remove("current");
    current = (i + hits.length) % hits.length;
    var l = hits[current];
    l.classList.add("current");
    openAround(l);
    stopFollowing();
    l.scrollIntoView({ block: "center" });
    count.textContent = current + 1 + " of " + hits.length;
  }
  function search() {
    clearTimeout(timer);
    clearHits();
    searched = input.value;
    var q = searched.toLowerCase();
    if (!q) {
      count.textContent = "";
      return;
    }
    var lines = log.querySelectorAll(".line");
    for (var i = 0; i < lines.length; i++) {
      if (lineText(lines[i]).toLowerCase().indexOf(q) >= 0) {
        lines[i].classList.add("match");
        highlight(lines[i], q);
        hits.push(lines[i]);
      }
    }
    if (hits.length) go(0);
    else count.textContent = serverButton.hidden ? "No match" : "No match on this page";
  }
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter") {
      e.preventDefault();
      if (input.value !== searched) search();
      else go(current + (e.shiftKey ? -1 : 1));
    } else if (e.key === "Escape") {
      input.value = "";
      search();
    }
  });
  document.getElementById("search-next").addEventListener("click", function () {
    if (input.value !== searched) search();
    else go(current + 1);
  });
  document.getElementById("search-prev").addEventListener("click", function () {
    if (input.value !== searched) search();
    else go(current - 1);
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.key === "/" && !(t.closest && t.closest("input, textarea, select, button, a"))) {
      e.preventDefault();
      input.focus();
    }
  });

  // The whole log, on the server: matching lines stream in as JSON Lines.
  var serverButton = document.getElementById("search-server");
  var results = document.getElementById("search-results");
  serverButton.addEventListener("click", function () {
    var q = input.value.trim();
    if (!q) {
      input.focus();
      count.textContent = "Type the text to find";
      return;
    }
    results.hidden = false;
    results.textContent = "";
    var status = document.createElement("p");
    status.className = "meta";
    status.setAttribute("aria-live", "polite");
    status.textContent = "Searching the whole log…";
    results.appendChild(status);
    var list = document.createElement("ol");
    list.className = "results";
    results.appendChild(list);
    var total = Number(serverButton.dataset.total);
    function show(m) {
      if (m.done) {
        if (m.error) status.textContent = "The search stopped: " + m.error + ".";
        else if (!m.matches) status.textContent = "No line of the whole log holds “" + q + "”.";
        else status.textContent = m.matches + (m.matches === 1 ? " line holds “" : " lines hold “") + q + "”" + (m.truncated ? " (the first " + m.matches + " are listed)." : ".");
        return;
      }
      var li = document.createElement("li");
      var a = document.createElement("a");
      var here = document.getElementById("L" + m.line);
      a.href = here ? "#L" + m.line : "/jobs/" + serverButton.dataset.job + "?before=" + Math.min(total, m.offset + 131072) + "#L" + m.line;
      a.textContent = "line " + m.line;
      var code = document.createElement("code");
      code.textContent = m.text;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(code);
      list.appendChild(li);
    }
    fetch(serverButton.dataset.url + "?q=" + encodeURIComponent(q))
      .then(function (r) {
        if (!r.ok)
          return r.json().then(function (e) {
            throw new Error(e.message || r.status);
          });
        var reader = r.body.getReader();
        var decoder = new TextDecoder();
        var rest = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) return;
            rest += decoder.decode(chunk.value, { stream: true });
            var parts = rest.split("\n");
            rest = parts.pop();
            parts.forEach(function (p) {
              if (p) show(JSON.parse(p));
            });
            return pump();
          });
        }
        return pump();
      })
      .catch(function (e) {
        status.textContent = "The search failed: " + e.message;
      });
  });
})();
