"""Benchmarks (``make bench``): measurements, not tests.

Each benchmark reports ratios against a reference measured in the same run (machines here
are shared and noisy) and writes JSON under ``reports/``.
"""
