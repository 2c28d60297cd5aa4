"""``python -m schemas freeze``: record the current writer schemas in schemas/history/.

``python -m schemas check``: the current schemas still read every past writer schema in history
(backward compatibility, required: Kafka keeps old records), judged by the Apache Avro reference
implementation; exits 1 if one does not. Forward problems (an old schema reading new records)
are printed as notes. See schemas/compat.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from schemas.compat import check
from schemas.registry import HERE, SchemaRegistry

USAGE = "usage: python -m schemas freeze | check"


def main(argv: list[str], folder: Path = HERE) -> int:
    if argv == ["freeze"]:
        for path in SchemaRegistry(folder).freeze():
            sys.stdout.write(f"{path}\n")
        return 0
    if argv == ["check"]:
        report = check(folder)
        for problem in report.problems:
            prefix = "" if problem.direction == "backward" else "note: "
            sys.stdout.write(f"{prefix}{problem}\n")
        backward, forward = len(report.of("backward")), len(report.of("forward"))
        sys.stdout.write(
            f"backward (required): {report.pairs['backward']} current/past pairs, {backward or 'no'} "
            f"problem(s); forward (advisory): {report.pairs['forward']} pairs, {forward or 'no'} problem(s)\n"
        )
        return 0 if report.ok else 1
    sys.exit(USAGE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
