"""One error tree for the whole domain.

    DeckstreamError
     ├── RetryableError          timeouts, 429/503, backpressure: try again later
     └── PermanentError          the input itself is bad: record the reason, do not retry
          ├── Refused            a request we refuse (``http_status``: the API's 4xx)
          │    ├── InputRejected      an upload we refuse
          │    │    ├── EmptyFile
          │    │    ├── FileTooLarge
          │    │    ├── UnsupportedFileType
          │    │    ├── PasswordProtected
          │    │    ├── CorruptFile
          │    │    └── InvalidOptions
          │    ├── DocumentNotFound   (also another tenant's document)
          │    ├── Conflict           not in this state (``code`` says which)
          │    └── RateLimited        a tenant over one of its limits (429, ``limit`` says which)
          │         └── AtCapacity    the server over a limit of its own (503)
          ├── BadModelOutput     the LLM answered, but not with usable cards
          │    └── UnreadableOutput   one answer held no readable card (bad JSON, no Q:/A:)
          │         └── RepairNeeded  …so the card writer asks once more, at once
          ├── BlobTooLarge       a file over the blob store's size limit
          └── BrokerHomeMismatch the local broker's kept data is not this deckstream's to use

Each edge maps these once: the API to problem+json, agents to retries or failure events.
"""

from __future__ import annotations


class DeckstreamError(Exception):
    """Base of every error we raise on purpose."""

    code = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(DeckstreamError):
    code = "retryable"

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(DeckstreamError):
    code = "permanent"


class Refused(PermanentError):
    """A request we refuse; ``http_status`` is the API's answer, ``code`` names the problem."""

    code = "refused"
    http_status = 400

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        if code is not None:
            self.code = code


class InputRejected(Refused):
    code = "rejected"
    http_status = 422


class EmptyFile(InputRejected):
    code = "empty-file"
    http_status = 400


class FileTooLarge(InputRejected):
    code = "file-too-large"
    http_status = 413


class UnsupportedFileType(InputRejected):
    code = "unsupported-type"
    http_status = 415


class PasswordProtected(InputRejected):
    code = "password-protected"
    http_status = 422


class CorruptFile(InputRejected):
    code = "corrupt-file"
    http_status = 422


class InvalidOptions(InputRejected):
    code = "invalid-options"
    http_status = 422


class DocumentNotFound(Refused):
    code = "not-found"
    http_status = 404


class Conflict(Refused):
    code = "conflict"
    http_status = 409


class RateLimited(Refused):
    """A tenant over one of its limits (``limit``: the setting's name, e.g. ``uploads_per_minute``);
    the request may be made again in ``retry_after_s`` seconds (the API's ``Retry-After``)."""

    code = "rate-limited"
    http_status = 429

    def __init__(self, limit: str, retry_after_s: float, reason: str, code: str | None = None) -> None:
        super().__init__(reason, code)
        self.limit, self.retry_after_s = limit, retry_after_s


class AtCapacity(RateLimited):
    """The server over a limit of its own, shared by every tenant (e.g. ``max_subscribers``)."""

    code = "at-capacity"
    http_status = 503


class BadModelOutput(PermanentError):
    code = "bad-model-output"


class UnreadableOutput(BadModelOutput):
    """The model's answer has no readable cards in it (bad JSON, no Q:/A: pairs)."""

    code = "unreadable-output"


class RepairNeeded(UnreadableOutput):
    """An answer had no usable card: the card writer's one repair attempt goes at once."""


class BlobTooLarge(PermanentError):
    """A file over the blob store's size limit (the API answers 413)."""

    code = "too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


class BrokerHomeMismatch(PermanentError):
    """The local broker's kept data was written by another layout, cluster or Kafka: starting on
    it could lose or mix documents, so nothing starts and nothing is wiped."""

    code = "broker-home-mismatch"
