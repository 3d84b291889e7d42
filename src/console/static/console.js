// backchannel console: the one script (SPEC §11). Every page works without
// it; it adds live updates and copy buttons. Served from
// /app/static/console.js under a CSP that allows no inline script.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="#element-id">; the element's value
  // (an input) or text is copied.
  function setUpCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (b) {
      if (b.dataset.ready) { return; }
      b.dataset.ready = "1";
      b.hidden = false;
      b.addEventListener("click", function () {
        var target = document.querySelector(b.getAttribute("data-copy"));
        if (!target) { return; }
        var text = target.value !== undefined ? target.value : target.textContent;
        var done = function () {
          var was = b.textContent;
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = was; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {});
        } else if (target.select) {
          target.select();
          try { document.execCommand("copy"); done(); } catch (e) { /* nothing */ }
        }
      });
    });
  }

  // Live parts: elements with an id and data-live are replaced by the same
  // elements of the page fetched again when the event stream says the page
  // would show a newer message. Forms outside them (a reply being typed)
  // are left alone.
  function setUpLive() {
    var main = document.getElementById("main");
    if (!main || !main.dataset.watch || !window.EventSource || !window.fetch) { return; }
    var latest = main.dataset.latest || "0";
    var busy = false;
    var again = false;
    var source = null;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (!r.ok || r.redirected) { throw new Error("status " + r.status); }
          return r.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          if (fresh && fresh.dataset.latest) { main.dataset.latest = fresh.dataset.latest; }
          doc.querySelectorAll("[data-live][id]").forEach(function (el) {
            var old = document.getElementById(el.id);
            if (old) { old.replaceWith(document.importNode(el, true)); }
          });
          setUpCopy(document);
          var note = document.querySelector(".live-note");
          if (note) {
            note.hidden = false;
            note.textContent = "New messages arrived and are shown.";
          }
        })
        .catch(function () {
          var note = document.querySelector(".live-note");
          if (note) { note.hidden = false; }
        })
        .then(function () {
          busy = false;
          if (again) { again = false; refresh(); }
        });
    }
    function connect() {
      var url = "/app/events?watch=" + encodeURIComponent(main.dataset.watch) +
        "&latest=" + encodeURIComponent(main.dataset.latest || latest);
      source = new EventSource(url);
      source.addEventListener("changed", function (e) {
        main.dataset.latest = e.data;
        refresh();
      });
    }
    connect();
    window.addEventListener("pagehide", function () { if (source) { source.close(); } });
  }

  // A template picked on the start form fills the form from the server's
  // version of it (the same as the "Use template" button without script).
  function setUpTemplatePicker() {
    var select = document.querySelector("select[data-template-picker]");
    if (!select) { return; }
    select.addEventListener("change", function () {
      var form = select.form;
      if (!form || !select.value) { return; }
      var url = new URL(window.location.href);
      url.searchParams.set("template", select.value);
      window.location.assign(url.toString());
    });
  }

  // The signature preview follows the text as it is typed.
  function setUpPreview() {
    var form = document.querySelector("form[data-preview]");
    if (!form || !window.fetch) { return; }
    var target = document.getElementById(form.getAttribute("data-preview"));
    if (!target) { return; }
    var timer = null;
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var body = new URLSearchParams(new FormData(form));
        body.set("preview", "1");
        fetch(form.getAttribute("data-preview-url"), {
          method: "POST", credentials: "same-origin", body: body
        }).then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) {
            if (!html) { return; }
            var doc = new DOMParser().parseFromString(html, "text/html");
            var fresh = doc.getElementById(target.id);
            if (fresh) { target.replaceWith(document.importNode(fresh, true)); target = document.getElementById(fresh.id); }
          }).catch(function () {});
      }, 400);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopy(document);
    setUpLive();
    setUpTemplatePicker();
    setUpPreview();
  });
})();
