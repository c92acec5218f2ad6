"""The decode pipeline: a worker's UserError comes back as the same one-line UserError (no worker traceback), and
decoding leaves the global random state alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsas_bench.backbones.pipeline import EncodeSettings, decoded_batches, encode_images
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.errors import UserError


@pytest.fixture
def images_with_a_bad_one(tmp_path):
    """Three readable PNGs, then a file that is no image, then one more PNG."""
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    paths[3].write_bytes(b"not an image at all")
    with pytest.raises(UserError) as direct:  # the message the reader gives in this process
        read_image_rgb(paths[3])
    return paths, str(direct.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_user_error_comes_back_unwrapped(tiny_backbone, images_with_a_bad_one, workers):
    paths, message = images_with_a_bad_one
    transform = tiny_backbone.transform()
    batches = decoded_batches(paths, read_image_rgb, transform, 2, workers)
    assert next(batches).shape == (2, 3, 224, 224)  # the batch before the bad image still arrives
    with pytest.raises(UserError) as info:
        next(batches)
    assert type(info.value) is UserError and str(info.value) == message and "\n" not in message
    settings = EncodeSettings(encode_batch=2, workers=workers)
    encoded = []
    with pytest.raises(UserError) as info:
        for i, _ in encode_images(tiny_backbone, paths, ["block1"], read_image_rgb, transform, settings):
            encoded.append(i)
    assert str(info.value) == message and encoded == [0, 1]


def test_decoding_never_moves_the_global_random_state(tiny_backbone, images_with_a_bad_one):
    """Encode-ahead runs after the training seed is set: whether images were cached must not change its draws."""
    paths = images_with_a_bad_one[0][:3]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    batches = list(decoded_batches(paths, read_image_rgb, tiny_backbone.transform(), 2, 0))
    assert len(batches) == 2 and torch.equal(torch.get_rng_state(), state)
