"""`python -m bench NAME` runs bench/NAME.py's main()."""

import importlib
import sys

from services.logs import configure_logging

if len(sys.argv) < 2:
    sys.exit(
        "usage: python -m bench NAME\n"
        "  (pipeline, generation, fairness, soak, replay, analytics, extract, llamacpp, prompts,\n"
        "   quality, models)"
    )
configure_logging("WARNING")  # logs to stderr: the JSON line is the last line of stdout
importlib.import_module(f"bench.{sys.argv[1]}").main()
