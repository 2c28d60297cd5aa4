"""`python -m bench NAME`: benchmarks that print one JSON line last."""
