"""Training: config merge/validation, schedules, strategies, the trainer and `run()`.

Kept import-light on purpose: importing this package (or `training.schedules`,
which is pure Python) does not import TensorFlow; the TF-only modules
(`trainer`, `run`, `strategy`) import it themselves.
"""
