"""Where the shared test corpus is (45 real and hostile documents), for tests and benchmarks.

`../shared/corpus` beside this checkout. A clone made elsewhere (a CI scratch folder) uses
the one beside the repository it was cloned from; `DECKSTREAM_CORPUS` overrides both.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_corpus() -> Path:
    if env := os.environ.get("DECKSTREAM_CORPUS"):
        return Path(env)
    here = ROOT.parent / "shared" / "corpus"
    if here.is_dir():
        return here
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        beside_origin = Path(origin).resolve().parent / "shared" / "corpus"
        if beside_origin.is_dir():
            return beside_origin
    return here


CORPUS = find_corpus()
