"""The worker's HTTP API (`web.api`: health, metrics, members, explain, triggers), on faust's web
server; every page checks the API key except liveness and, by setting, /metrics."""
