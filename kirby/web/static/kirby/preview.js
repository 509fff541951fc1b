// Live preview of a schedule's next fire times, and of the slots around the zone's next DST
// transition, while its cron, time zone or DST policy is edited.
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
  var fallBack = document.getElementById("dst_fall_back");
  var springForward = document.getElementById("dst_spring_forward");
  var around = box.querySelector(".preview-transition");
  var aroundBody = box.querySelector(".transition-table tbody");
  var more = box.querySelector(".transition-more");
  var none = box.querySelector(".preview-no-transition");
  var timer = null;

  function cells(row, texts) {
    texts.forEach(function (text) {
      var cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
  }

  function showTransition(data) {
    while (aroundBody.firstChild) { aroundBody.removeChild(aroundBody.firstChild); }
    none.hidden = !!data;
    around.hidden = !data;
    if (!data) { return; }
    ["kind", "local", "utc", "shift"].forEach(function (key) {
      box.querySelector(".transition-" + key).textContent = data.transition[key];
    });
    box.querySelector(".transition-policy").textContent = data.policy;
    data.rows.forEach(function (item) {
      var row = document.createElement("tr");
      if (item.mark) { row.className = "table-warning"; }
      cells(row, [item.wall, item.zone || "(does not run)", item.utc, item.mark]);
      aroundBody.appendChild(row);
    });
    more.textContent = "and " + data.more + " more slots in the transition's hour";
    more.hidden = !data.more;
  }

  function show(data) {
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (data.error) {
      errorLine.textContent = data.error;
      errorLine.hidden = false;
      table.hidden = true;
      around.hidden = true;
      none.hidden = true;
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
    showTransition(data.transition);
  }

  function refresh() {
    if (!cron.value.trim()) { return; }
    var url = box.dataset.url + "?cron=" + encodeURIComponent(cron.value) + "&timezone=" + encodeURIComponent(zone.value);
    if (fallBack) { url += "&dst_fall_back=" + encodeURIComponent(fallBack.value); }
    if (springForward) { url += "&dst_spring_forward=" + encodeURIComponent(springForward.value); }
    fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(show).catch(function () {});
  }

  function later() { clearTimeout(timer); timer = setTimeout(refresh, 300); }
  cron.addEventListener("input", later);
  zone.addEventListener("input", later);
  [fallBack, springForward].forEach(function (select) { if (select) { select.addEventListener("change", refresh); } });
  refresh();
}());
