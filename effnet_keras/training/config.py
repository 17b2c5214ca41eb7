"""Run configuration: base -> model -> dataset -> --config file -> --hparam_str, validated.

Like automl's `hparams.py`, but every key must already exist in `effnet_keras/configs/base.yaml`
(a typo is an error naming the key and the allowed keys, never a silently new
setting), and the merged config is written to `model_dir/config.yaml` so a rerun in
the same directory can tell whether it is resuming the same job.

base.yaml holds the defaults; the types and constraints live in
`effnet_keras.config_schema` (one dataclass per section). The YAML layers are merged as
dicts here (`merge` coerces each value to its field's type); `build_config` returns the
typed, validated `RunConfig`, which travels through the run: each consumer receives its
section (`config.train`, `config.data`). Dicts are for YAML on disk only (`dump`,
`write_or_check`). Every error is a `ConfigError` (re-exported from config_schema; a ValueError).
"""

import copy
import importlib.resources
import os

import yaml

from effnet_keras import config_schema
from effnet_keras import fileio
from effnet_keras.config_schema import ConfigError  # also re-exported: config_lib.ConfigError

# The YAML recipes ship inside the package (effnet_keras/configs/), so an installed wheel
# finds them wherever site-packages is; importlib.resources resolves them there.
CONFIG_DIR = str(importlib.resources.files("effnet_keras") / "configs")


def config_path(*parts):
    """Path of a packaged config, e.g. config_path("recipes", "digits_demo.yaml")."""
    return os.path.join(CONFIG_DIR, *parts)


def resolve_config_file(path):
    """A YAML file the user names, or a packaged one by its path under effnet_keras/configs/
    (`recipes/progressive_paper_s.yaml`), which an installed wheel has but no folder shows."""
    if fileio.exists(path):  # local or a bucket path
        return path
    packaged = config_path(path)
    if os.path.exists(packaged):
        return packaged
    recipes = sorted(f"recipes/{f}" for f in os.listdir(config_path("recipes")) if f.endswith(".yaml"))
    raise ConfigError(f"Config file {path!r} does not exist, neither as a path nor as a packaged config "
                      f"(effnet_keras/configs/...: {', '.join(recipes)}).")


def load_yaml(path):
    if not fileio.exists(path):
        raise ConfigError(f"Config file {path!r} does not exist.")
    with fileio.open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path!r} must hold a mapping at the top level, got {type(data).__name__}.")
    return data


def available_datasets():
    folder = config_path("datasets")
    return sorted(f[: -len(".yaml")] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def dataset_config(name):
    key = str(name).lower()
    path = config_path("datasets", f"{key}.yaml")
    if not os.path.exists(path):
        raise ConfigError(f"Unknown dataset_cfg {name!r}. Available: {', '.join(available_datasets())}")
    return load_yaml(path)


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def merge(base, override, source, _prefix=""):
    """Deep-merge `override` into a copy of `base`; unknown keys are errors.

    Each value is coerced to its type in `config_schema` (e.g. "1.0e12" -> float for
    train.lr_base); a value of the wrong type is a ConfigError naming the key.
    """
    result = copy.deepcopy(base)
    for key, value in config_schema.canonical_keys(_prefix, override or {}).items():
        path = f"{_prefix}{key}"
        if key not in result:
            allowed = ", ".join(sorted(result))
            raise ConfigError(f"{source}: unknown config key {path!r}. Allowed keys under {_prefix or 'top level'!r}: {allowed}")
        if isinstance(result[key], dict) and result[key]:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path!r} is a section; give a mapping, not {value!r}.")
            result[key] = merge(result[key], value, source, path + ".")
        else:
            result[key] = config_schema.coerce(path, value)
    return result


def parse_hparam_str(text):
    """'train.batch_size=512,data.randaug_magnitude=10' -> nested dict (values parsed as YAML scalars).

    Lists use '|': 'a.b=1|2|3'. A value may itself contain commas only inside [...].
    """
    if not text:
        return {}
    if text.endswith((".yaml", ".yml")):
        return load_yaml(text)
    result = {}
    for item in _split_top_level(text):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"--hparam_str item {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        value = [yaml.safe_load(v) for v in raw.split("|")] if "|" in raw else yaml.safe_load(raw)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


def _split_top_level(text):
    items, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return items


def build_config(model_name=None, dataset_cfg=None, config_file=None, hparam_str=None, overrides=None):
    """base.yaml -> model recipe -> dataset -> config_file -> hparam_str -> overrides (flags).

    Files set defaults, what the user typed wins: `model_name` (the --model_name flag) is applied
    last, over any file that names another model (the digits demo recipe names
    efficientnetv2-nano), and a key given both in --hparam_str and as a flag with different
    values is an error naming both, never a silent pick.
    """
    layers = []  # (source, mapping) merged in this order after the model recipe
    if dataset_cfg:
        layers.append((f"effnet_keras/configs/datasets/{dataset_cfg}.yaml", dataset_config(dataset_cfg)))
        layers.append(("--dataset_cfg", {"data": {"config_name": str(dataset_cfg).lower()}}))
    if config_file:
        config_file = resolve_config_file(config_file)
        layers.append((config_file, load_yaml(config_file)))
    if hparam_str:
        layers.append(("--hparam_str", parse_hparam_str(hparam_str)))
    if overrides:
        layers.append(("command-line flags", overrides))
    if model_name:
        layers.append(("--model_name", {"model": {"name": model_name}}))
    _refuse_typed_conflicts(layers)

    config = config_schema.base_defaults()
    if model_name:
        config = merge(config, {"model": {"name": model_name}}, "--model_name")
        recipe = model_recipe(model_name)
        if recipe:
            config = merge(config, recipe, f"recipe for {model_name}")
    for source, layer in layers:
        if source == "--model_name":
            _note_replaced_model(config, model_name)
        config = merge(config, layer, source)
    return validate(config)


def _refuse_typed_conflicts(layers):
    """Two things the user typed (--hparam_str, flags, --model_name) setting one key differently."""
    typed = [(source, _flatten(layer)) for source, layer in layers
             if source in ("--hparam_str", "command-line flags", "--model_name")]
    for i, (source_a, flat_a) in enumerate(typed):
        for source_b, flat_b in typed[i + 1:]:
            for key in sorted(set(flat_a) & set(flat_b)):
                if flat_a[key] != flat_b[key]:
                    raise ConfigError(f"{key} is given twice with different values: {flat_a[key]!r} in {source_a} "
                                      f"and {flat_b[key]!r} in {source_b}; give it once.")


def _note_replaced_model(config, model_name):
    if str(config["model"]["name"]).lower() != str(model_name).lower():
        from absl import logging

        logging.info("--model_name=%s replaces model.name=%s set by a config file.", model_name,
                     config["model"]["name"])


def model_recipe(model_name):
    """effnet_keras/configs/recipes/<family>.yaml (EfficientNet: RMSProp; CoAtNet: AdamW + cosine), then
    effnet_keras/configs/models/<name>.yaml when one exists (per-model sizes, augmentation, stages)."""
    from effnet_keras.models import registry

    try:
        spec = registry.get_spec(model_name)
    except ValueError as err:  # an unknown name: one line listing the registered ones
        raise ConfigError(f"model.name: {err}") from None
    recipe = {}
    for path in (config_path("recipes", f"{spec.family.recipe}.yaml"), config_path("models", f"{spec.name}.yaml")):
        if os.path.exists(path):
            recipe = _deep_update(recipe, load_yaml(path))
    return recipe


def _deep_update(base, override):
    result = copy.deepcopy(base)
    for key, value in override.items():
        result[key] = _deep_update(result.get(key) or {}, value) if isinstance(value, dict) else value
    return result


def validate(config):
    """A merged run config (dict) checked against `config_schema.RunConfig` (types, choices, ranges,
    unknown and missing keys) -> the RunConfig, its model name the registry's spelling
    ('EfficientNetV2S' -> 'efficientnetv2-s': every later lookup by name agrees); raises ConfigError."""
    from effnet_keras.models import registry

    model = dict(config.get("model") or {})
    if isinstance(model.get("name"), str):
        try:
            model["name"] = registry.canonical(model["name"])
        except ValueError as err:  # an unknown name: one line listing the registered ones
            raise ConfigError(f"model.name: {err}") from None
    return config_schema.RunConfig.from_dict(dict(config, model=model))


def dump(config):
    """The YAML text of a run config (a RunConfig or its dict)."""
    data = config.to_dict() if isinstance(config, config_schema.RunConfig) else config
    return yaml.safe_dump(data, sort_keys=True)


def _has_checkpoint(model_dir):
    return any(fileio.exists(os.path.join(model_dir, name)) for name in ("checkpoint", "model.weights.h5"))


def write_or_check(config, model_dir, override_config=False):
    """Write model_dir/config.yaml, or refuse a different config for an existing run."""
    config = yaml.safe_load(dump(config))
    fileio.makedirs(model_dir)
    path = os.path.join(model_dir, "config.yaml")
    # A run that stopped before its first checkpoint (a bad --data_dir, a typo) left nothing to
    # resume: its config.yaml does not bind the corrected rerun.
    if fileio.exists(path) and not override_config and _has_checkpoint(model_dir):
        # Read as a run config: earlier releases' key names and model spellings count as the same.
        existing = yaml.safe_load(dump(config_schema.RunConfig.from_dict(load_yaml(path))))
        if existing != config:
            before, after = _flatten(existing), _flatten(config)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            raise ConfigError(
                f"{model_dir} already holds a run with a different config (differs in: {', '.join(changed[:12])}). "
                "Use another --model_dir, or pass --override_config to continue with the new config."
            )
    # A temp name per process (multi-worker runs write the same file), then an atomic replace.
    fileio.write_text(path, dump(config))
    return path
