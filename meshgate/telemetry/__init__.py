"""Logs (JSON lines) and metrics helpers shared by every component."""
