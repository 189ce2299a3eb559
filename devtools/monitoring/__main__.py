"""``python -m devtools.monitoring [--check]``: write (or compare) manifests/monitoring/."""

from __future__ import annotations

import argparse
import sys

from devtools.monitoring.bundle import OUT, files


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.monitoring")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs")
    args = parser.parse_args()
    stale = []
    for rel, text in files().items():
        path = OUT / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the generator" if args.check else "written"
    for rel in stale:
        print(f"{OUT / rel}: {verb}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
