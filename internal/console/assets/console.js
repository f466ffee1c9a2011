// postern console: live updates of the Blocked IPs queue over
// Server-Sent Events, and "select all". The pages work without it.
(function () {
  "use strict";
  var all = document.getElementById("all");
  var rows = document.getElementById("rows");
  if (all && rows) {
    all.addEventListener("change", function () {
      rows.querySelectorAll("input[name=target]").forEach(function (i) { i.checked = all.checked; });
    });
  }
  var dash = document.getElementById("dash");
  if (dash && window.EventSource) {
    // the dashboard: fetched again, whole, when the block table changes,
    // and every few seconds for the traffic rates
    var dbusy = false;
    var redraw = function () {
      if (dbusy || document.hidden) return;
      dbusy = true;
      fetch("/", { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.text();
      }).then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("dash");
        if (next) dash.innerHTML = next.innerHTML;
      }).catch(function () {}).finally(function () { dbusy = false; });
    };
    var des = new EventSource("/events");
    des.addEventListener("blocks", redraw);
    window.setInterval(redraw, 5000);
  }
  var live = document.getElementById("live");
  if (!rows || !live || !window.EventSource) return;
  var query = live.getAttribute("data-query") || "";
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    var checked = {};
    rows.querySelectorAll("input[name=target]:checked").forEach(function (i) { checked[i.value] = true; });
    var before = {};
    rows.querySelectorAll("input[name=target]").forEach(function (i) { before[i.value] = true; });
    fetch("/blocks/rows" + (query ? "?" + query : ""), { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.text();
    }).then(function (html) {
      rows.innerHTML = html;
      rows.querySelectorAll("input[name=target]").forEach(function (i) {
        if (checked[i.value]) i.checked = true;
        if (!before[i.value]) i.closest("tr").classList.add("fresh");
      });
      live.textContent = "live · updated " + new Date().toLocaleTimeString();
    }).catch(function () {
      live.textContent = "live updates paused";
    }).finally(function () {
      busy = false;
      if (again) { again = false; refresh(); }
    });
  }
  var es = new EventSource("/events");
  es.addEventListener("blocks", refresh);
  var first = true;
  es.addEventListener("hello", function () {
    // a block made between the page and the feed: fetch once on (re)connect
    if (first) { first = false; live.textContent = "live"; } else { refresh(); }
  });
  es.onerror = function () { live.textContent = "live updates reconnecting"; };
})();
