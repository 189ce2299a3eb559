"""``kubectl dchat``: the kubectl plugin (filled in a later release)."""

from __future__ import annotations

import sys


def main() -> int:
    print("kubectl-dchat: not yet implemented; available subcommands: none", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
