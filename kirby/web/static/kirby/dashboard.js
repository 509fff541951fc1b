// The dashboard refreshes its rows in place: the same page with ?partial=1 returns them, rendered
// (and escaped) by the server, every data-refresh seconds while the tab is visible.
(function () {
  "use strict";
  var table = document.getElementById("dashboard");
  var rows = document.getElementById("dashboard-rows");
  if (!table || !rows) { return; }
  var seconds = parseFloat(table.getAttribute("data-refresh")) || 15;
  function refresh() {
    if (document.hidden) { return; }
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin" }).then(function (response) {
      if (response.ok) { return response.text(); }
      throw new Error("HTTP " + response.status);
    }).then(function (html) {
      rows.innerHTML = html;
      table.setAttribute("data-refreshed", new Date().toISOString());
    }).catch(function () { /* keep the rows shown; try again at the next tick */ });
  }
  window.setInterval(refresh, seconds * 1000);
}());
