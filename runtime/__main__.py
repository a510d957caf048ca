"""Command line of the runtime: `python -m runtime sample|info EXPORT_DIR ...` (console script: edgevae-runtime)."""
from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
