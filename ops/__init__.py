"""Operator tooling: start, stop and inspect the whole stack natively (`python -m ops`)."""
