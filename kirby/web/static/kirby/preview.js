// Live preview of a schedule's next fire times while its cron or time zone is edited.
// Everything from the server is inserted with textContent (never as HTML).
(function () {
  "use strict";
  var box = document.getElementById("schedule-preview");
  var cron = document.getElementById("cron");
  var zone = document.getElementById("timezone");
  if (!box || !cron || !zone) { return; }
  var errorLine = box.querySelector(".preview-error");
  var table = box.querySelector(".preview-table");
  var body = table.querySelector("tbody");
  var timer = null;

  function show(data) {
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (data.error) {
      errorLine.textContent = data.error;
      errorLine.hidden = false;
      table.hidden = true;
      return;
    }
    errorLine.hidden = true;
    data.fires.forEach(function (fire) {
      var row = document.createElement("tr");
      [fire.zone, fire.utc].forEach(function (text) {
        var cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
    table.hidden = false;
  }

  function refresh() {
    if (!cron.value.trim()) { return; }
    var url = box.dataset.url + "?cron=" + encodeURIComponent(cron.value) + "&timezone=" + encodeURIComponent(zone.value);
    fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(show).catch(function () {});
  }

  function later() { clearTimeout(timer); timer = setTimeout(refresh, 300); }
  cron.addEventListener("input", later);
  zone.addEventListener("input", later);
  refresh();
}());
