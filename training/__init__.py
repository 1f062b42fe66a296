"""Offline training: produces the artifacts under models/ that the service serves."""
