/* The compose page: a live preview of the message and a live count of the audience.
   Progressive: without this script the form still saves, and the saved preview shows.
   Every request carries the session's CSRF token (X-CSRF-Token, from the page's meta tag). */
(function () {
  "use strict";
  var form = document.getElementById("compose");
  if (!form) { return; }
  var token = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var frameForm = document.getElementById("preview-form");
  var text = document.getElementById("preview-text");
  var problems = document.getElementById("preview-problems");
  var audience = document.getElementById("audience-count");
  var CONTENT = ["subject", "preheader", "body_md", "broadcast_id"];

  function later(fn, ms) {
    var timer = null;
    return function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(fn, ms);
    };
  }

  function formData() {
    // A scheduled broadcast's segment fields are disabled (its audience is fixed), and
    // disabled fields are left out of a form's data: add them, so the count and the preview
    // are the saved audience's, not everyone's.
    var data = new FormData(form);
    Array.prototype.slice.call(form.querySelectorAll("[data-segment]:disabled, fieldset:disabled [data-segment]"))
      .forEach(function (el) {
        if ((el.type === "checkbox" || el.type === "radio") && !el.checked) { return; }
        if (el.value) { data.append(el.name, el.value); }
      });
    return data;
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      body: formData(),
      credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "Accept": "application/json" }
    }).then(function (response) {
      return response.json().then(function (data) { return { ok: response.ok, data: data }; });
    });
  }

  function copyInto(target) {
    // The hidden form posts the typed text into the preview frame: the email gets its own
    // sandboxed page instead of being injected into this one.
    Array.prototype.slice.call(target.querySelectorAll("[data-copy]")).forEach(function (el) {
      target.removeChild(el);
    });
    formData().forEach(function (value, name) {
      if (name === "csrf_token") { return; }
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      input.setAttribute("data-copy", "");
      target.appendChild(input);
    });
  }

  function refreshPreview() {
    copyInto(frameForm);
    frameForm.submit();
    post(form.getAttribute("data-render-url")).then(function (answer) {
      var data = answer.data;
      problems.textContent = data.problems || "";
      problems.hidden = !data.problems;
      if (text) { text.textContent = data.text || ""; }
    }).catch(function () {
      problems.textContent = "The preview could not be refreshed (is the server reachable?).";
      problems.hidden = false;
    });
  }

  // Counting a large audience can take seconds: one count at a time, and one more after it
  // if the rules changed meanwhile (never a pile of requests for every keystroke).
  var counting = false, recount = false;
  function refreshAudience() {
    if (counting) { recount = true; return; }
    counting = true;
    audience.textContent = "counting…";
    post(form.getAttribute("data-audience-url")).then(function (answer) {
      var data = answer.data;
      if (!answer.ok) {
        audience.textContent = data.error ? data.error.message : "cannot count this audience";
      } else {
        audience.textContent = data.count.toLocaleString() + " subscribers (" + data.description + ")";
      }
    }).catch(function () {
      audience.textContent = "could not count (is the server reachable?)";
    }).then(function () {
      counting = false;
      if (recount) { recount = false; refreshAudience(); }
    });
  }

  var previewSoon = later(refreshPreview, 400);
  var audienceSoon = later(refreshAudience, 400);
  function changed(event) {
    var target = event.target;
    var segment = target.hasAttribute && target.hasAttribute("data-segment");
    if (segment && event.type === "change") {
      // Text rules count when the field is left (change), not on every keystroke.
      audienceSoon();
      previewSoon(); // the preview is addressed to the audience's first subscriber
    } else if (!segment && CONTENT.indexOf(target.name) >= 0) {
      previewSoon();
    }
  }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  refreshPreview();
  refreshAudience();
})();
