"""The only socket code of netsentry: resolution, connections, TLS, datagrams, streams,
socket options, the kernel clock call and the HTTP client, on the event loop."""
