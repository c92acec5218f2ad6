"""Dataset adapters, the embedded synthetic benchmark, shot manifests and the datamodule."""
