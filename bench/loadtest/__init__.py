"""Load test (locust) and its SLO gate; shared stack harness for the benches."""
