"""The one rule that makes a model name canonical: 'EfficientNetV2S', 'efficientnetv2_s',
'efficientnetv2-s' all name `efficientnetv2-s`.

A leaf module: the model registry (registered builders) and the weight registry
(registry.json) match names against their own keys with it, so both accept what a user
types and agree on what it means.
"""


def canonical_name(name, known):
    """The entry of `known` (canonical names, lower case with dashes) that `name` spells, or None.

    Case, '_' for '-', and dropped dashes do not matter: 'EfficientNetB0' is 'efficientnet-b0'.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key in known:
        return key
    compact = key.replace("-", "")
    for candidate in known:
        if candidate.replace("-", "") == compact:
            return candidate
    return None
