"""The simulator: replays timed JSON datasets of requests against the platform's public API,
follows every task to its terminal status, and reports latencies, throughput and plots.

It is a client like any other: it talks to the platform only over HTTP and the
`tasks.status` topic, and imports nothing from the platform's stages.
"""
