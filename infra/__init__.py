"""Adapters at the edge: settings, logging, metrics, Kafka, Avro, Postgres, S3, providers."""
