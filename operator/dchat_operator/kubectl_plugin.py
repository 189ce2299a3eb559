"""``kubectl dchat``: the console script ``kubectl-dchat`` (kubectl finds it on PATH as a
plugin). The commands live in ``dchat_operator.plugin``."""

from __future__ import annotations

import sys

from dchat_operator.plugin.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
