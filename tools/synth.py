#!/usr/bin/env python
"""`python tools/synth.py ARGS` is `avssl synth ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
