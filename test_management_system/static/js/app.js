/* The small layer over server-rendered pages: the viewer's timezone, confirmations, and live
   logs. Every page works without it; a reload shows the current state. */
(function () {
  "use strict";

  // Times are rendered in the browser's timezone from the next page on.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("tz=" + zone) === -1) {
      document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* no Intl: times stay in the server's zone, labelled as such */ }

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  // ANSI colour codes and other control characters never reach the page.
  var ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

  function follower(box) {
    var follow = document.getElementById("follow");
    // Scrolling up pauses following; scrolling back to the end resumes it.
    box.addEventListener("scroll", function () {
      var atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      if (follow && follow.checked !== atEnd && document.activeElement !== follow) { follow.checked = atEnd; }
    });
    return function () {
      if (!follow || follow.checked) { box.scrollTop = box.scrollHeight; }
    };
  }

  function setStatus(text, tone) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "live-status " + (tone || ""); }
  }

  // Replaces the elements with these ids by their fresh server-rendered versions.
  function swap(url, ids) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        [].concat(ids).forEach(function (id) {
          var fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
        });
      }).catch(function () { /* the next change tries again */ });
  }

  function liveRun(root) {
    var log = document.getElementById("log");
    var after = parseInt(root.getAttribute("data-after"), 10) || 0;
    var scroll = follower(log);
    var source = null, backoff = 1000, finished = false, summaryTimer = null;
    var tests = new Map();

    function indexTests() {
      tests.clear();
      document.querySelectorAll("#test-tree [data-test-id]").forEach(function (li) {
        tests.set(li.getAttribute("data-test-id"), li);
      });
    }

    function addTestRow(id, name) {
      var tree = document.getElementById("test-tree");
      if (!tree || tests.has(id)) { return tests.get(id); }
      var li = document.createElement("li");
      li.className = "test planned";
      li.setAttribute("data-test-id", id);
      var state = document.createElement("span"); state.className = "state"; state.setAttribute("data-state", ""); state.textContent = "Planned";
      var label = document.createElement("span"); label.className = "name mono wrap"; label.textContent = name || id;
      var time = document.createElement("span"); time.className = "muted small"; time.setAttribute("data-duration", "");
      li.append(state, " ", label, " ", time);
      tree.appendChild(li);
      tests.set(id, li);
      var empty = document.querySelector("[data-empty]");
      if (empty) { empty.remove(); }
      return li;
    }

    function apply(delta) {
      if (delta.gone) { setStatus("this run no longer exists", "bad"); stop(); return; }
      if (delta.plan && delta.plan.length) {
        delta.plan.forEach(function (t) { addTestRow(t.id, t.name); });
      }
      (delta.tests || []).forEach(function (t) {
        var li = tests.get(t.id) || addTestRow(t.id, t.id);
        if (!li) { return; }
        li.className = "test " + t.outcome;
        var state = li.querySelector("[data-state]");
        if (state) { state.textContent = t.outcome.charAt(0).toUpperCase() + t.outcome.slice(1); }
        if (t.duration) { var d = li.querySelector("[data-duration]"); if (d) { d.textContent = t.duration; } }
      });
      var fragment = document.createDocumentFragment();
      (delta.lines || []).forEach(function (line) {
        if (line.seq <= after) { return; }  // already shown: a resumed stream never doubles a line
        var span = document.createElement("span");
        span.className = "line " + (line.tone || "");
        span.setAttribute("data-seq", line.seq);
        span.textContent = line.text.replace(ANSI, "") + "\n";
        fragment.appendChild(span);
      });
      if (fragment.childNodes.length) {
        var empty = document.getElementById("log-empty");
        if (empty) { empty.remove(); }
        log.appendChild(fragment);
        scroll();
      }
      if (delta.last_seq > after) { after = delta.last_seq; root.setAttribute("data-after", after); }
      if (delta.state) { onState(); }
    }

    function onState() {
      // The state block (badge, progress, timings, buttons) is rendered by the server.
      if (summaryTimer) { return; }
      summaryTimer = setTimeout(function () {
        summaryTimer = null;
        swap(root.getAttribute("data-summary-url"), "run-summary");
      }, 150);
    }

    function end() {
      finished = true;
      stop();
      setStatus("finished", "");
      // The whole page once more: final results, artifacts, transitions.
      swap(window.location.pathname, ["run-summary", "run-tests", "run-extra"]).then(indexTests);
    }

    function stop() { if (source) { source.close(); source = null; } }

    // Catch up by plain requests (after a dropped stream, or where EventSource is missing).
    function catchUp() {
      var url = root.getAttribute("data-live-url") + "?after=" + after;
      return fetch(url, { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (delta) {
          apply(delta);
          if (delta.more) { return catchUp(); }
          return delta;
        });
    }

    function connect() {
      if (finished) { return; }
      if (!window.EventSource) { poll(); return; }
      source = new EventSource(root.getAttribute("data-stream-url") + "?after=" + after);
      source.addEventListener("open", function () { backoff = 1000; setStatus("live", "ok"); });
      source.addEventListener("delta", function (e) { apply(JSON.parse(e.data)); });
      source.addEventListener("state", function () { onState(); });
      source.addEventListener("end", function () { end(); });
      source.addEventListener("error", function () {
        // Closed by the server after its time limit, or the connection dropped: fetch what
        // was missed after the last seq shown, then open a new stream after it.
        stop();
        if (finished) { return; }
        setStatus("reconnecting…", "warn");
        setTimeout(function () {
          catchUp().then(function (d) {
            if (d && d.state && d.state.finished) { end(); } else { connect(); }
          }, function () { backoff = Math.min(backoff * 2, 10000); connect(); });
        }, backoff);
      });
    }

    function poll() {
      catchUp().then(function (d) {
        if (d && d.state && d.state.finished) { end(); } else { setTimeout(poll, 1000); }
      }, function () { setTimeout(poll, 3000); });
    }

    indexTests();
    scroll();
    if (root.getAttribute("data-finished") === "1") { setStatus("finished", ""); return; }
    connect();
  }

  function liveConsole(box) {
    var offset = parseInt(box.getAttribute("data-offset"), 10) || 0;
    var scroll = follower(box);
    scroll();
    if (box.getAttribute("data-done") === "1") { return; }
    setStatus("live", "ok");
    function tick() {
      fetch(box.getAttribute("data-url") + "?offset=" + offset, { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (body) {
          if (body.text) {
            var empty = document.getElementById("log-empty");
            if (empty) { empty.remove(); }
            box.appendChild(document.createTextNode(body.text.replace(ANSI, function (m) { return m === "\n" || m === "\t" ? m : ""; })));
            scroll();
          }
          offset = body.next_offset;
          if (body.complete) { setStatus("finished", ""); return; }
          setTimeout(tick, 1000);
        }, function () { setStatus("reconnecting…", "warn"); setTimeout(tick, 3000); });
    }
    setTimeout(tick, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var run = document.getElementById("run-live");
    if (run) { liveRun(run); }
    var consoleBox = document.getElementById("jenkins-console");
    if (consoleBox) { liveConsole(consoleBox); }
  });
})();
