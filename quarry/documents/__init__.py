"""Documents: the one creation flow, reads and deletes, and the ingest pipeline the worker runs."""
