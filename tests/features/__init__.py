"""Tests of features/: indicators, labels, store and point-in-time checks."""
