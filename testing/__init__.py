"""Harnesses that tests/ and bench/ share: isolated platform instances on the running
stack (testing/instance.py). They drive the platform from outside, as an operator does:
`python -m ops` starts processes, the API's CLI issues keys."""
