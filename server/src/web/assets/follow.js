// Live tail: SSE events carry {"offset": next byte, "html": rendered lines}; `event: end`
// when the job finished. Lines go into the innermost section still open: a chunk's stray
// `</details>` is dropped by the HTML parser, so its `<i class="section-end">` marker closes it
// (`data-stopped`: the section ended without its own end marker, the script stopped in it).
(function () {
  const log = document.getElementById("log");
  let offset = Number(log.dataset.offset);
  const isOpen = (el) => el && el.matches("details.section") && !(el.lastElementChild && el.lastElementChild.matches("i.section-end"));
  const innermost = (el) => { while (isOpen(el.lastElementChild)) el = el.lastElementChild; return el; };
  let cur = innermost(log);
  function append(html) {
    const atBottom = log.dataset.autoscroll === "true";
    const t = document.createElement("template");
    t.innerHTML = html;
    for (const node of Array.from(t.content.children)) {
      if (node.matches("i.section-end")) {
        if (cur === log) continue;
        const span = cur.querySelector(":scope > summary > .duration");
        if (span && !span.textContent && node.dataset.duration) span.textContent = node.dataset.duration;
        if (node.dataset.stopped) cur.classList.add("stopped");
        cur.appendChild(node);
        cur = cur.parentElement.closest("details.section") || log;
      } else {
        cur.appendChild(node);
        cur = innermost(cur);
      }
    }
    if (window.pisteLogGrew) window.pisteLogGrew();
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }
  const icons = { success: "✓", failed: "✗", canceled: "⊘", skipped: "»", manual: "⏵" };
  function ended(status) {
    const head = document.getElementById("job-status");
    if (head && status) {
      head.className = "status " + status;
      head.textContent = (icons[status] || "•") + " " + status;
    }
    const follow = document.getElementById("follow");
    if (follow) follow.hidden = true;
    if (status === "failed") {
      // Where the script stopped: open, as the page shows a failed job's.
      log.classList.add("failed");
      log.querySelectorAll("details.section.stopped").forEach((d) => { d.open = true; });
    }
  }
  function connect() {
    const es = new EventSource(log.dataset.stream + "?format=html&offset=" + offset);
    es.onmessage = (e) => { const m = JSON.parse(e.data); append(m.html); offset = m.offset; };
    es.addEventListener("end", (e) => {
      es.close();
      log.dataset.follow = "false";
      const m = JSON.parse(e.data);
      if (m.html) append(m.html);
      ended(m.status);
    });
    // Reconnect ourselves so the stream resumes from the last offset, not the first URL's.
    es.onerror = () => { es.close(); if (log.dataset.follow === "true") setTimeout(connect, 1000); };
  }
  connect();
})();
