"""Local infrastructure for the demo and tests: Kafka, Redis and worker processes on loopback."""
