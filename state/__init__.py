"""Member state: Faust tables keyed by member id, and the Redis keys shared across partitions."""
