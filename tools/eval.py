#!/usr/bin/env python
"""`python tools/eval.py ARGS` is `avssl eval ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
