#!/usr/bin/env python
"""`python tools/bench.py ARGS` is `avssl bench ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
