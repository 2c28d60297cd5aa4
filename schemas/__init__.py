"""Avro schemas of every event (the .avsc files here are the source of truth) and their codec.

Imports nothing of ours.
"""

from schemas.registry import REGISTRY, SchemaRegistry, UnknownSchema

__all__ = ["REGISTRY", "SchemaRegistry", "UnknownSchema"]
