"""Helpers shared by the tests: the real stack, Kafka reads, money flows, SSE, tokens, flags, CLI runs."""
