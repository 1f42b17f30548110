"""What the agent serves: the HTTP server, its routes, /probe, the web config, basic auth
and the status page."""
