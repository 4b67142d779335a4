"""testbed's rep_n as an evaluate module: evaluate.load(testbed.metrics.hf.module_path("rep_n"))."""

import evaluate  # noqa: F401  (evaluate reads a module's imports to check its requirements)

from testbed.metrics.hf import make_metric

Metric = make_metric("rep_n")
