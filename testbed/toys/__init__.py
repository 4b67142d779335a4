"""Closed-form toys of collapse, in seconds and without a language model: the Gaussian refit (gaussian.py) and
the categorical refit (categorical.py)."""
