// Starts Swagger UI on the OpenAPI document Envoy serves. Kept out of index.html so the page
// works under a Content-Security-Policy without 'unsafe-inline' scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No calls to the public validator service: the page works offline.
    validatorUrl: null,
    // "Authorize" keeps the bearer token across reloads (local storage of this browser only).
    persistAuthorization: true,
  });
});
