"""The web layer: routers, request forms, negotiation, OpenAPI, error handlers and middleware.
Nothing below it imports FastAPI or Prometheus."""
