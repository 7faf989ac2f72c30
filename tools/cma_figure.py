#!/usr/bin/env python
"""`python tools/cma_figure.py ARGS` is `avssl cma-figure ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["cma-figure", *sys.argv[1:]]))
