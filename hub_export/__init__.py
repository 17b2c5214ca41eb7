"""The exporter's earlier name, kept as an alias: `import hub_export; hub_export.export(...)` and
`python -m hub_export` are `effnet_keras.export` and `effnet-export`."""

from effnet_keras.export import export  # noqa: F401

__all__ = ["export"]
