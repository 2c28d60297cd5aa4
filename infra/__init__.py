"""Local infrastructure the project starts itself (no Docker): the Kafka broker."""
