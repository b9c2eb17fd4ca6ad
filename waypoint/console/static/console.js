// The console's only script: bulk selection on the workflows list, and live updates.
// Live updates come from the server's event stream (<base>/events) when it offers one,
// else from polling <base>/live. Every value is written with textContent, never as HTML.
(function () {
  "use strict";
  var base = document.body.dataset.base || "";

  // -- bulk selection ------------------------------------------------------------------------
  var picks = Array.prototype.slice.call(document.querySelectorAll("input.pick"));
  var all = document.getElementById("select-all");
  function refreshSelection() {
    var n = picks.filter(function (p) { return p.checked; }).length;
    var label = document.getElementById("selected");
    if (label) { label.textContent = n + " selected"; }
    document.querySelectorAll("button.bulk-action").forEach(function (b) {
      b.disabled = n === 0;
      b.textContent = b.dataset.label + (n ? " (" + n + ")" : "");
    });
  }
  picks.forEach(function (p) { p.addEventListener("change", refreshSelection); });
  if (all) {
    all.addEventListener("change", function () {
      picks.forEach(function (p) { p.checked = all.checked; });
      refreshSelection();
    });
  }
  refreshSelection();

  // -- live updates --------------------------------------------------------------------------
  var terminal = ["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"];
  var single = document.querySelector("[data-live-id]");
  var rows = {};
  document.querySelectorAll("tr[data-id]").forEach(function (tr) { rows[tr.dataset.id] = tr; });
  var counts = document.getElementById("counts");
  if (!single && !Object.keys(rows).length && !counts) { return; }

  function setStatus(el, status) {
    if (!el || el.textContent === status) { return; }
    el.textContent = status;
    el.className = "st st-" + status + " changed";
  }
  function apply(id, status) {
    if (single && single.dataset.liveId === id && single.textContent !== status) {
      // The rest of the page (steps, output) changed too: reload it.
      window.location.reload();
      return;
    }
    if (rows[id]) { setStatus(rows[id].querySelector("[data-status]"), status); }
  }
  function applyCounts(found) {
    Object.keys(found || {}).forEach(function (s) {
      var el = document.querySelector('[data-count="' + s + '"]');
      if (el) { el.textContent = found[s]; }
    });
  }
  function poll() {
    var ids = single ? [single.dataset.liveId] : Object.keys(rows);
    var query = ids.map(function (id) { return "id=" + encodeURIComponent(id); }).join("&");
    fetch(base + "/live?" + query, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        Object.keys(data.workflows).forEach(function (id) { apply(id, data.workflows[id]); });
        applyCounts(data.counts);
      })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 2000); });
  }
  var countsDue = false;
  function refreshCountsSoon() {
    if (countsDue) { return; }
    countsDue = true;
    window.setTimeout(function () {
      countsDue = false;
      fetch(base + "/live", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data) { applyCounts(data.counts); } })
        .catch(function () {});
    }, 1000);
  }
  if (window.EventSource) {
    var source = new EventSource(base + "/events");
    var opened = false;
    source.onopen = function () { opened = true; document.body.dataset.live = "events"; };
    source.onmessage = function (e) {
      var event;
      try { event = JSON.parse(e.data); } catch (err) { return; }
      if (event && event.workflow_id) { apply(event.workflow_id, event.status); refreshCountsSoon(); }
    };
    source.onerror = function () {
      if (!opened) { source.close(); document.body.dataset.live = "polling"; poll(); }
    };
  } else {
    document.body.dataset.live = "polling";
    poll();
  }
})();
