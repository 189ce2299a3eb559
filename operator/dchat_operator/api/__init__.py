"""The DchatCluster API: pydantic models, constants and CRD generation (pure, no I/O)."""
