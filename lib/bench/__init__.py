"""Synthetic copies with known sources, for tests, calibration and benchmarks."""
