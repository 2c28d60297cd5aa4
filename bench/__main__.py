"""`python -m bench NAME` runs bench/NAME.py's main()."""

import importlib
import sys

if len(sys.argv) < 2:
    sys.exit("usage: python -m bench NAME   (pipeline, extract, llamacpp)")
importlib.import_module(f"bench.{sys.argv[1]}").main()
