"""Pin sha256 hashes into effnet_keras/weights/registry.json (needs network access to the hosts).

    python tools/pin_weight_hashes.py [--models efficientnetv2-s,efficientnet-b0] [--ids imagenet21k] [--dry-run]

For every selected entry (and its `_notop` file): download it through the same code path users
take (an md5 from keras.applications is verified on the way), compute sha256, and write
`sha256:<hex>` into the registry. Entries already pinned to sha256 are re-verified, and a
mismatch stops the run: a published file that changed must be looked at by a person.
Prints one line per file. The machines this project is developed on have no access to
storage.googleapis.com, which is why most automl/tpu entries still carry `null`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effnet_keras.weights import download  # noqa: E402
from effnet_keras.weights import registry  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma list (default: all)")
    parser.add_argument("--ids", default=None, help="comma list of weight ids (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print, do not rewrite registry.json")
    args = parser.parse_args()
    with open(registry._PATH, encoding="utf8") as f:
        data = json.load(f)
    models = args.models.split(",") if args.models else list(data["models"])
    ids = set(args.ids.split(",")) if args.ids else None
    failures = 0
    for model in models:
        for weight_id, raw in data["models"][model].items():
            if ids and weight_id not in ids:
                continue
            entry = registry.lookup(model, weight_id)
            for include_top, key in ((True, "hash"), (False, "notop_hash")):
                if not include_top and not entry.notop_url:
                    continue
                try:
                    path = download.fetch(entry, include_top=include_top)
                except OSError as err:
                    print(f"FAIL {model} {weight_id} {'top' if include_top else 'notop'}: {err}")
                    failures += 1
                    continue
                digest = "sha256:" + download.sha256_of(path)
                old = raw.get(key)
                if old and old.startswith("sha256:") and old != digest:
                    raise SystemExit(f"{model} {weight_id}: pinned {old} but the file now hashes to {digest}")
                raw[key] = digest
                print(f"ok   {model} {weight_id} {'top' if include_top else 'notop'} {digest}")
    if not args.dry_run:
        with open(registry._PATH, "w", encoding="utf8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
