"""Streaming on Kafka: the consumer-group loop (at-least-once, dead letters) and its Serve deployment."""
