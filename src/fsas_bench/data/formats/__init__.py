"""Dataset format loaders (each returns a `DatasetIndex`) and image/mask readers."""

from fsas_bench.data.formats.images import read_image_rgb, read_mask, read_sample, verify_samples
from fsas_bench.data.formats.meta_json import load_meta_json
from fsas_bench.data.formats.mvtec_tree import load_mvtec_tree
from fsas_bench.data.formats.packaged import (
    DATA_EXTRA_INSTALL,
    elpv_available,
    load_elpv,
    load_textile,
    textile_available,
)
from fsas_bench.data.formats.visa_csv import load_visa, load_visa_csv

__all__ = [
    "DATA_EXTRA_INSTALL",
    "elpv_available",
    "load_elpv",
    "load_meta_json",
    "load_mvtec_tree",
    "load_textile",
    "load_visa",
    "load_visa_csv",
    "read_image_rgb",
    "read_mask",
    "read_sample",
    "textile_available",
    "verify_samples",
]
