// The job page's tools: follow the log's end or not (a toggle), and jump to the first line
// that reads as an error (opening the sections around it).
(function () {
  var log = document.getElementById("log");
  var follow = document.getElementById("follow");
  if (follow) {
    follow.addEventListener("click", function () {
      var on = log.dataset.autoscroll !== "true";
      log.dataset.autoscroll = on ? "true" : "false";
      follow.setAttribute("aria-pressed", on ? "true" : "false");
      follow.textContent = on ? "⏸ Stop following" : "▶ Follow the log";
      if (on) window.scrollTo(0, document.body.scrollHeight);
    });
  }
  var pattern = /\b(error|fatal|failed|failure|exception|panicked)\b/i;
  document.getElementById("first-error").addEventListener("click", function () {
    var lines = log.querySelectorAll(".line");
    for (var i = 0; i < lines.length; i++) {
      var l = lines[i];
      var ln = l.querySelector(".ln");
      var text = l.textContent.slice(ln ? ln.textContent.length : 0);
      // A command's echo (`$ grep error`) is not an error.
      if (/^\s*\$ /.test(text)) continue;
      if (pattern.test(text) || l.querySelector(".fg-1, .fg-9")) {
        for (var d = l.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
        if (follow && log.dataset.autoscroll === "true") follow.click();
        var anchor = l.id || (l.querySelector("[id]") || {}).id;
        if (anchor) history.replaceState(null, "", "#" + anchor);
        l.classList.add("first-error");
        l.scrollIntoView({ block: "center" });
        return;
      }
    }
    document.getElementById("first-error-none").hidden = false;
  });
})();
