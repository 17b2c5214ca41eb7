"""Fine-tune initialisation (train.ft_init_ckpt): a run of ours or a weights file into a fresh classifier."""

from absl import logging

from effnet_keras import fileio
from effnet_keras import rundir
from effnet_keras.models import factory
from effnet_keras.weights import weight_ids
from effnet_keras.weights.assign import assign_by_name


def init_from_checkpoint(model, source, config):
    """train.ft_init_ckpt: a model_dir of ours (EMA weights preferred) or a weights file.

    The backbone is copied by layer name (`weights.assign.assign_by_name`: any other mismatch
    is an error naming the layer); a head the donor lacks, or whose shape differs (other
    class count), keeps its fresh initialisation, and the log says so. Returns the
    re-initialised layers.
    """
    name = config.model.name
    if fileio.isdir(source):  # local or a bucket path
        try:
            donor_run = rundir.RunDir.open(source)
        except rundir.RunDirError as err:
            raise ValueError(f"train.ft_init_ckpt: {err}") from None
        donor, where = donor_run.build(), donor_run.weights_path
        logging.info("Fine-tune init from %s (%s weights).", where, "EMA" if donor_run.is_ema else "raw")
    else:
        if not fileio.exists(source) and source in weight_ids(name):
            # An id also fixes the in-model normalisation (AdvProp, 21k): the model must be built with it.
            raise ValueError(
                f"train.ft_init_ckpt={source!r} is a weight id: pass it as model.weights={source} instead, so the "
                "model is built with the normalisation those weights expect (the head is re-initialised when the "
                "class count differs)."
            )
        # A weights file: the loaders match by layer name and skip a head the donor lacks.
        donor, where = factory.build_backbone(name, model.input_shape[1], weights=source), source
    arrays = {layer.name: layer.get_weights() for layer in donor.layers if layer.weights}
    # CoAtNet trained at another size (224 -> 384, paper A.1): bias tables resized, one log line.
    skipped = assign_by_name(model, arrays, source=where, missing_head_ok=True)
    loaded = set(arrays) - set(skipped)
    reinitialised = [layer.name for layer in model.layers if layer.weights and layer.name not in loaded]
    logging.warning("Fine-tune init: %d layers restored; re-initialised: %s", len(loaded & {layer.name for layer in
                    model.layers}), reinitialised or "none")
    return reinitialised
