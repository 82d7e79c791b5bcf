"""What monitoring systems read: the /healthz and /readyz probes and /metrics."""
