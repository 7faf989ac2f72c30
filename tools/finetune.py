#!/usr/bin/env python
"""`python tools/finetune.py ARGS` is `avssl finetune ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
