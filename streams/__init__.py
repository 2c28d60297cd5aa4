"""The Faust app: topics and thin agents (decode, call one service, emit)."""
