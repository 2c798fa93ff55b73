"""The HTTP face of the server: REST routes, WebSocket signaling, pages, OpenAPI."""
