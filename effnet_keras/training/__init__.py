"""Training: config merge/validation, progressive schedule, strategies, the trainer and `run()`.

Kept import-light on purpose: importing this package (or `training.progressive`,
which is pure Python) does not import TensorFlow; the TF-only modules
(`trainer`, `run`, `strategy`) import it themselves.

The training loop uses Keras internals (all in effnet_keras._keras_internals),
checked on the Keras versions in SUPPORTED_KERAS: another Keras fails here, at
import, with one line saying so. The model builders work on any Keras 3.
"""

from effnet_keras import _keras_internals

_keras_internals.check_keras_version()
