"""Real-time serving (HTTP service)."""
