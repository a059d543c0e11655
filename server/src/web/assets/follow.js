// Live tail: SSE events carry {"offset": next byte, "html": rendered lines}; `event: end`
// when the job finished. Lines go into the innermost section still open: a chunk's stray
// `</details>` is dropped by the HTML parser, so its `<i class="section-end">` marker closes it.
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
        cur.appendChild(node);
        cur = cur.parentElement.closest("details.section") || log;
      } else {
        cur.appendChild(node);
        cur = innermost(cur);
      }
    }
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }
  function connect() {
    const es = new EventSource(log.dataset.stream + "?format=html&offset=" + offset);
    es.onmessage = (e) => { const m = JSON.parse(e.data); append(m.html); offset = m.offset; };
    es.addEventListener("end", (e) => {
      es.close();
      log.dataset.follow = "false";
      const m = JSON.parse(e.data);
      if (m.html) append(m.html);
    });
    // Reconnect ourselves so the stream resumes from the last offset, not the first URL's.
    es.onerror = () => { es.close(); if (log.dataset.follow === "true") setTimeout(connect, 1000); };
  }
  connect();
})();
