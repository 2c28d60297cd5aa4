"""Tenants and their API keys: the key format (keys), the in-memory index the API checks keys
against (store), what an operator does (admin) and the accounts topic they live on (log).
See docs/tenants.md."""
