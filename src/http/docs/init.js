// Swagger UI on this server's own /openapi.json; "Try it out" calls this same server.
// validatorUrl: null, or the page would ask swagger.io to validate the document.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
