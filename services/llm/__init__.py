"""The LLM: the client port and its adapters, timeouts, connection pools, the in-flight
scheduler and the circuit breaker."""
