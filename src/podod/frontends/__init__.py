"""Frontends at the edge: the Unix socket, the REST API, the Matrix bot and /metrics."""
