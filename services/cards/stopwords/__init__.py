"""Stopword lists per language (the Snowball project's, BSD licence), read by services.cards.lexicon."""
