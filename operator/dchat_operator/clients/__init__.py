"""All I/O of the operator: the Kubernetes API (server-side apply, reads, status, events)."""
