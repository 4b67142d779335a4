"""testbed's entropy as an evaluate module: evaluate.load(testbed.metrics.hf.module_path("entropy"))."""

import evaluate  # noqa: F401  (evaluate reads a module's imports to check its requirements)

from testbed.metrics.hf import make_metric

Metric = make_metric("entropy")
