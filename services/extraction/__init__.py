"""Extraction: files in, a page ledger out (DocumentOpened, Page*, ExtractionEnded).

check_upload(path, limits) -> FileKind          cheap upload-time checks, raises InputRejected
check_isolated(path, limits, filename=...)      the same in a resource-limited subprocess
Sandbox(limits).check(path, filename=...)       the same, with a child started ahead of time (the API)
extract(path, limits, filename=...)             in-process, streams events
extract_isolated(path, limits, filename=...)    the same in a resource-limited subprocess
Sandbox(limits).extract(path, filename=...)     the same, with a child started ahead of time
count_tokens(text) -> int                       the approximate token counter chunking uses
"""

import sys

# PyMuPDF imports its ONNX layout model (0.3 s and its memory) and pymupdf4llm (0.16 s, with
# numpy) eagerly when they are installed; we use neither. This runs before any of our modules
# imports PyMuPDF, in the API, the worker and the extraction child.
sys.modules.setdefault("pymupdf.layout", None)  # type: ignore[arg-type]
sys.modules.setdefault("pymupdf4llm", None)  # type: ignore[arg-type]

from services.extraction.isolated import Sandbox, check_isolated, extract_isolated  # noqa: E402
from services.extraction.ledger import extract  # noqa: E402
from services.extraction.limits import check_upload  # noqa: E402
from services.extraction.tokens import count_tokens  # noqa: E402

__all__ = ["Sandbox", "check_isolated", "check_upload", "count_tokens", "extract", "extract_isolated"]
