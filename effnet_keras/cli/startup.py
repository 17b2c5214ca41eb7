"""How our commands start: their name in usage lines, and TensorFlow's start-up lines kept quiet.

Imported first by `effnet_keras/__init__.py` (before Keras imports TensorFlow), so it imports
nothing of ours.
"""

import os
import sys


def prog_name(module):
    """How the user started us, for usage lines: `effnet-export` as a console script, `python -m
    hub_export` as the module they named (argv[0] is then a .py path), `python main.py` in a checkout;
    `module` when nothing tells (a test calling main())."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if invoked == "main.py":  # the checkout's shim
        return "python main.py"
    if invoked and not invoked.endswith(".py"):
        return invoked
    command = getattr(sys, "orig_argv", [])
    if "-m" in command[:-1]:
        return f"python -m {command[command.index('-m') + 1]}"
    return f"python -m {module}"


def verbosity_requested(argv=None):
    """True when the command line asks for absl verbosity >= 1 (`--verbosity=1`, `-v 1`, ...)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for i, arg in enumerate(argv):
        for flag in ("--verbosity", "-v"):
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def quiet_tensorflow_startup(argv=None):
    """Our command-line tools start without TensorFlow's start-up lines (oneDNN, CUDA probing,
    CPU features, cuInit) unless the user asks for them with --verbosity=1.

    TF prints them from C++ as it is imported, which happens (through Keras) when effnet_keras
    is imported, before any flag is parsed; so this reads argv itself and must run first.
    TF 2.21 writes some of them before its log level applies (absl's pre-InitializeLog lines),
    so TF is imported here with file descriptor 2 pointed at /dev/null; an import error is
    raised after stderr is restored, so it is never hidden. An explicit TF_CPP_MIN_LOG_LEVEL
    in the environment is respected.
    """
    if verbosity_requested(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
    finally:
        os.close(saved)
        os.close(devnull)


OUR_COMMANDS = ("effnet-train", "effnet-export", "effnet-cam", "effnet-convert", "effnet-predict")
_OUR_SCRIPTS = ("main.py", "__main__.py", "train.py", "export.py", "predict.py", "cam.py", "convert.py")


def running_our_command():
    """A console script of ours, `python -m` one of our tools, or a checkout's main.py."""
    started = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(started) in OUR_COMMANDS:
        return True
    command = getattr(sys, "orig_argv", [])
    if started == "-m" and "-m" in command[:-1]:  # `python -m pkg.mod`: argv[0] is "-m" while packages import
        return command[command.index("-m") + 1].startswith(("effnet_keras", "hub_export"))
    # effnet_keras/cli/startup.py -> the folder that holds effnet_keras/ and hub_export/ (a checkout's root)
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.basename(started) in _OUR_SCRIPTS and os.path.abspath(started).startswith(checkout + os.sep)
