"""The edge: validation, canonical form and redaction (pure), and dead letters."""
