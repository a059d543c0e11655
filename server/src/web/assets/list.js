// A project's pipeline list, live: SSE snapshots of the newest pipelines update their rows
// and add new ones at the top.
(function () {
  var table = document.getElementById('pipelines');
  if (!table || !window.EventSource) return;
  var body = table.tBodies[0];
  function cell(tr, text, code) {
    var td = document.createElement('td');
    if (code) { var c = document.createElement('code'); c.textContent = text; td.appendChild(c); } else td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function row(p) {
    var tr = document.createElement('tr');
    tr.id = 'pipeline-' + p.id;
    var a = document.createElement('a');
    a.href = '/pipelines/' + p.id;
    a.textContent = '#' + p.id;
    cell(tr, '').appendChild(a);
    var s = document.createElement('span');
    cell(tr, '').appendChild(s);
    cell(tr, p.git_ref, true);
    cell(tr, p.commit, true);
    cell(tr, p.trigger);
    cell(tr, '').className = 'duration';
    cell(tr, p.created);
    return tr;
  }
  function apply(list) {
    var empty = document.getElementById('no-pipelines');
    if (empty && list.length) empty.remove();
    list.slice().reverse().forEach(function (p) {
      var tr = document.getElementById('pipeline-' + p.id);
      if (!tr) { tr = row(p); body.insertBefore(tr, body.firstChild); }
      var s = tr.querySelector('.status') || tr.cells[1].firstChild;
      s.className = 'status ' + p.status;
      s.textContent = p.label;
      tr.querySelector('.duration').textContent = p.duration;
    });
  }
  function connect() {
    var es = new EventSource(table.dataset.events);
    es.onmessage = function (e) { apply(JSON.parse(e.data)); };
    es.onerror = function () { es.close(); setTimeout(connect, 2000); };
  }
  connect();
})();
