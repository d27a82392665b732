"""Benchmarks: each prints its figures; `make bench` runs them all. Never run by the tests."""
