"""Benchmarks of meshgate, run against real processes: ``python -m bench --help``.

Not part of the test suite: they measure and report, they never pass or fail on a figure.
"""
