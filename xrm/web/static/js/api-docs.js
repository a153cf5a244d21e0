// Interactive API documentation: swagger-ui over the catalog's OpenAPI document.
// Requests made from the page ride on the session cookie, so writes carry the CSRF
// token the page was rendered with (the API refuses cookie writes without it).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  var token = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    docExpansion: "none",
    defaultModelsExpandDepth: 0,
    withCredentials: true,
    requestInterceptor: function (request) {
      var method = (request.method || "GET").toUpperCase();
      if (method !== "GET" && method !== "HEAD" && method !== "OPTIONS") {
        request.headers["X-CSRFToken"] = token;
      }
      return request;
    }
  });
})();
