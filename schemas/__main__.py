"""``python -m schemas freeze``: record the current writer schemas in schemas/history/."""

import sys

from schemas.registry import SchemaRegistry

if sys.argv[1:] != ["freeze"]:
    sys.exit("usage: python -m schemas freeze")
for path in SchemaRegistry().freeze():
    sys.stdout.write(f"{path}\n")
