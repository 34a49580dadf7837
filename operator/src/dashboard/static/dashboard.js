// Driftless dashboard: live updates. The pages work without this script; with it, a page
// listens to /events and, when the operator's caches change, fetches itself again and swaps
// in the new <main> (filters, scroll position and the URL stay as they are).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (next && main && next.dataset.fingerprint !== main.dataset.fingerprint) {
          main.replaceWith(next);
          document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  var source = new EventSource("/events");
  source.onopen = function () {
    live.textContent = "live";
    live.dataset.state = "live";
  };
  source.onerror = function () {
    live.textContent = "reconnecting";
    live.dataset.state = "reconnecting";
  };
  source.addEventListener("change", function (e) {
    var main = document.querySelector("main");
    if (main && main.dataset.fingerprint !== e.data) {
      refresh();
    }
  });
})();
