"""Hybrid search: the request, the service and the response."""
