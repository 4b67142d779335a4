"""Collapse metrics: pure functions over samples (text.py) and models (perplexity.py), the early signals of
collapse (signals.py), the one registry every table and figure reads (registry.py) and the phase rule
(phases.py). Import from the module that defines a metric: this package imports nothing, so the reports,
which read only the registry and the phase rule, do not load torch."""
