#!/usr/bin/env python
"""`python tools/pretrain.py ARGS` is `avssl pretrain ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
