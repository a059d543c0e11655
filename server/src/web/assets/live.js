// The pipeline page, live: SSE snapshots of the pipeline and its jobs patch the page in place
// (status with its icon, duration, the actions that apply); `event: end` when all is over.
// Action buttons post in the background; the next snapshot shows the result.
(function () {
  // Buttons only where the page said the caller may act (`data-csrf`, empty for a caller
  // without a session, e.g. one sending a token).
  // `reused`: a reused job also gets "Run anyway" (a retry that does not reuse).
  function forms(box, actions, retryLabel, reused) {
    if (!box || box.dataset.csrf === undefined) return;
    box.textContent = '';
    var all = [['play', '⏵ Play'], ['retry', '↻ ' + retryLabel], ['cancel', '⊘ Cancel']];
    if (reused && actions.retry) all.push(['retry?reuse=false', '↻ Run anyway']);
    all.forEach(function (a) {
      if (a[0] !== 'retry?reuse=false' && !actions[a[0]]) return;
      var f = document.createElement('form');
      f.method = 'post';
      f.action = box.dataset.base + '/' + a[0];
      f.dataset.action = a[0];
      var t = document.createElement('input');
      t.type = 'hidden';
      t.name = 'csrf';
      t.value = box.dataset.csrf;
      f.appendChild(t);
      var b = document.createElement('button');
      b.textContent = a[1];
      f.appendChild(b);
      box.appendChild(f);
    });
  }
  function setStatus(el, status, label) {
    el.className = el.className.replace(/\b(created|pending|running|success|failed|canceling|canceled|skipped|manual|scheduled)\b/g, '').trim() + ' ' + status;
    return label;
  }
  function apply(p) {
    var head = document.getElementById('pipeline-status');
    if (head) head.textContent = setStatus(head, p.status, p.label);
    var d = document.getElementById('pipeline-duration');
    if (d) d.textContent = p.duration;
    forms(document.getElementById('pipeline-actions'), p.actions, 'Retry failed');
    p.jobs.forEach(function (j) {
      var card = document.getElementById('job-' + j.id);
      if (!card) return;
      if (card.dataset.status === j.status && card.dataset.duration === j.duration) return;
      card.dataset.status = j.status;
      card.dataset.duration = j.duration;
      setStatus(card, j.status, j.label);
      var state = card.querySelector('.state');
      if (state) {
        state.textContent = j.label + ' ';
        var span = document.createElement('span');
        span.className = 'duration';
        span.textContent = j.duration;
        state.appendChild(span);
      }
      // `↺` after the name while the job's result is an earlier job's.
      var mark = card.querySelector('a.reused');
      if (mark) mark.remove();
      if (j.reused_from) {
        var a = document.createElement('a');
        a.className = 'reused';
        a.href = '/jobs/' + j.reused_from.job_id;
        a.title = 'reused from pipeline ' + j.reused_from.pipeline + ', job ' + j.reused_from.job_id + ' (' + j.reused_from.job + ')';
        a.textContent = '↺';
        card.firstElementChild.after(a);
      }
      forms(card.querySelector('.job-actions'), j.actions, 'Retry', !!j.reused_from);
    });
    document.dispatchEvent(new CustomEvent('piste:pipeline', { detail: p }));
  }
  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (!f.dataset || !f.dataset.action) return;
    e.preventDefault();
    fetch(f.action, { method: 'POST', body: new URLSearchParams(new FormData(f)), credentials: 'same-origin' });
  });
  var live = document.getElementById('live');
  if (!live) return;
  function connect() {
    var es = new EventSource(live.dataset.events);
    es.onmessage = function (e) { apply(JSON.parse(e.data)); };
    es.addEventListener('end', function (e) { es.close(); apply(JSON.parse(e.data)); });
    es.onerror = function () { es.close(); setTimeout(connect, 2000); };
  }
  connect();
})();
