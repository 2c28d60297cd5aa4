"""The domain and its adapters. Never imports `api` or `streams`."""
