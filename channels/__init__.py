"""Delivery channels behind one interface; `log` locally, webhooks for real gateways."""
