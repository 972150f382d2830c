"""Tiny random checkpoints in the official layouts, for tests and benchmarks only."""
