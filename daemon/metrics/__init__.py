"""Metrics: the contract (names), the daemon's health metrics, and the state collector."""
