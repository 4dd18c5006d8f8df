/* The live progress of a send: polls the progress endpoint every few seconds while the
   broadcast is scheduled, sending or paused, and updates the bar and the figures in place
   (an aria-live region reads the new figures out). Stops when the send is final. */
(function () {
  "use strict";
  var panel = document.getElementById("progress-panel");
  if (!panel || !panel.hasAttribute("data-live")) { return; }
  var url = panel.getAttribute("data-progress-url");
  var bar = document.getElementById("send-progress");
  var line = document.getElementById("progress-text");
  var badge = document.getElementById("status-badge");
  var row = document.getElementById("results-row");
  var LIVE = ["scheduled", "sending", "paused"];
  var EVERY = 5000; // each poll counts the send's deliveries: not more often

  function percent(rate) { return rate === null ? "" : " (" + (100 * rate).toFixed(1) + "%)"; }

  function show(data) {
    var p = data.progress, r = data.results, s = p.by_status;
    bar.max = p.total || 1;
    bar.value = p.done;
    if (p.total === null && data.status === "scheduled") {
      line.textContent = "Not started yet: the audience is counted when sending starts.";
    } else line.textContent = p.done + " of " + (p.total === null ? "?" : p.total) + " done" +
      (p.percent === null ? "" : " (" + p.percent + "%)") + " · sent " + s.sent + ", skipped " +
      s.skipped + ", failed " + s.failed + ", waiting " + (s.queued + s.sending);
    if (badge) { badge.textContent = data.status; badge.className = "badge " + data.status; }
    if (row) {
      var cells = row.querySelectorAll("td");
      var values = [r.sent, r.delivered, r.opens + percent(r.open_rate),
        r.clicks + percent(r.click_rate), r.unsubscribes, r.bounces, r.complaints, r.conversions];
      for (var i = 0; i < cells.length && i < values.length; i++) { cells[i].textContent = values[i]; }
    }
    return LIVE.indexOf(data.status) >= 0;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data && show(data)) { setTimeout(poll, EVERY); }
      })
      .catch(function () { setTimeout(poll, EVERY * 3); });
  }
  setTimeout(poll, EVERY);
})();
