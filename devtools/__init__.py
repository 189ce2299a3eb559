"""Developer tooling that no runtime image installs (the ``monitoring`` extra)."""
