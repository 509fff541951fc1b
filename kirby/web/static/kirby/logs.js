// The logs tab: follows /logs/stream over Server-Sent Events. The browser's EventSource resumes
// after the last event id it received when the connection drops. Lines are added with
// textContent, so whatever a script prints is shown as text, never interpreted as HTML.
(function () {
  "use strict";
  var box = document.getElementById("log-lines");
  var status = document.getElementById("log-status");
  if (!box) { return; }
  var params = new URLSearchParams();
  if (box.dataset.run) { params.set("run", box.dataset.run); }
  else if (box.dataset.job) { params.set("job", box.dataset.job); }
  var source = new EventSource(box.dataset.stream + "?" + params.toString());
  var single = Boolean(box.dataset.run);

  source.onopen = function () { status.textContent = single ? "Following run " + box.dataset.run : "Following new lines"; };
  source.onerror = function () { status.textContent = "Disconnected; reconnecting…"; };
  source.onmessage = function (event) {
    var line = JSON.parse(event.data);
    var row = document.createElement("div");
    row.className = "log-line log-" + line.stream;
    if (!single) {
      var run = document.createElement("span");
      run.className = "log-run";
      run.textContent = line.run_id;
      row.appendChild(run);
    }
    var text = document.createElement("span");
    text.className = "log-text";
    text.textContent = line.time.substring(11, 19) + " " + line.text;
    row.appendChild(text);
    var atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.appendChild(row);
    if (atBottom) { box.scrollTop = box.scrollHeight; }
  };
  source.addEventListener("end", function (event) {
    var info = JSON.parse(event.data);
    status.textContent = "Run " + info.run_id + " finished: " + info.state;
    status.dataset.state = info.state;
    source.close();
  });
}());
