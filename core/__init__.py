"""Settings, durations and metrics: what every other room uses (no faust)."""
