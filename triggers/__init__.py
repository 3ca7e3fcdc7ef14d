"""Trigger definitions, their condition language and the evaluation engine."""
