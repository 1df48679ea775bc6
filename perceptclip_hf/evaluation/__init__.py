"""Evaluation on the benchmarks: a scorer's predictions and metrics on a split, cross-dataset evaluation
(`benchmark`; no Trainer), and the offline `evaluate` modules (`evaluate_modules`, `metrics_modules/`)."""
