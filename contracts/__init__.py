"""What StorePulse accepts and publishes: input models, JSON Schemas, topic configuration (pure)."""
