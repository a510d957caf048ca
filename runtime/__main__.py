"""`python -m edgevae ...`: the same command line as the `edgevae` console script (runtime/_cli.py)."""
from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
