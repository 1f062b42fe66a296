"""What the service tells operators: Prometheus metrics, request ids, structured logs."""
