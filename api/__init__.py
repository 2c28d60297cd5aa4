"""The HTTP API (FastAPI), its SSE hub and the web page."""
