"""The commands: each module's `main()` is a console script (setup.py entry points).

    effnet-train    train.py     (absl flags; `python main.py` in a checkout)
    effnet-export   export.py    (`python -m hub_export` too)
    effnet-predict  predict.py
    effnet-cam      cam.py
    effnet-convert  convert.py

common.py is what they share: one way to get a model from flags (`model_from_args`), one flag
style, one error line; startup.py keeps TensorFlow's start-up lines out of their output.
Run one from a checkout with `python -m effnet_keras.cli.<module>`.
"""
