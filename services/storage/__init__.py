"""Where bytes live: the blob store (uploads, cards, decks, caches) and the API token."""
