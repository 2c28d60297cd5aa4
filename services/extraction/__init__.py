"""Extraction: files in, a page ledger out (DocumentOpened, Page*, ExtractionEnded).

check_upload(path, limits) -> FileKind          cheap upload-time checks, raises InputRejected
extract(path, limits, filename=...)             in-process, streams events
extract_isolated(path, limits, filename=...)    the same in a resource-limited subprocess
count_tokens(text) -> int                       the approximate token counter chunking uses
"""

from services.extraction.isolated import extract_isolated
from services.extraction.limits import check_upload
from services.extraction.tokens import count_tokens
from services.extraction.worker import extract

__all__ = ["check_upload", "count_tokens", "extract", "extract_isolated"]
