// Acme static page (dev): shows whether the API answers. No build step, no dependencies.
(function () {
  "use strict";
  var el = document.getElementById("status");
  fetch("https://api.dev.acme.example/v1/status", { credentials: "include" })
    .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
    .then(function (s) { el.textContent = "API " + (s.version || "") + " is up."; el.className = "ok"; })
    .catch(function () { el.textContent = "API unreachable."; el.className = "down"; });
})();
