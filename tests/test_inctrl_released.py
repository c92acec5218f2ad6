"""Released InCTRL ``.pyth`` checkpoints: both released containers load ψ, η, φ strictly (the frozen CLIP
keys skipped), scores follow the loaded weights, bad files are one-line UserErrors, and a sweep uses the file
instead of training."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.runner.sweep import Sweep, SweepSpec


def released_layout(embed_dim: int, patches: int, seed: int) -> OrderedDict[str, torch.Tensor]:
    """A whole-model state dict with the released module's key names and shapes (written out by hand):
    Adapter(D, 4) as ``adapter.fc.{0,2}.weight`` without biases; two heads (``diff_head_ref`` on D inputs,
    ``diff_head`` on the patch count) of Linear(d,128)/(128,64)/(64,1) with biases and BatchNorm1d over d, 128,
    64; plus a few frozen CLIP tensors the loader must skip."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["visual.conv1.weight"] = rand(8, 3, 16, 16)
    state["transformer.resblocks.0.attn.in_proj_weight"] = rand(24, 8)
    state["token_embedding.weight"] = rand(10, 8)
    state["positional_embedding"] = rand(77, 8)
    state["ln_final.weight"] = rand(8)
    state["text_projection"] = rand(8, 8)
    state["logit_scale"] = torch.tensor(4.6)
    state["adapter.fc.0.weight"] = rand(embed_dim // 4, embed_dim)
    state["adapter.fc.2.weight"] = rand(embed_dim, embed_dim // 4)
    for head, d in (("diff_head", patches), ("diff_head_ref", embed_dim)):
        for i, (n_in, n_out) in enumerate(((d, 128), (128, 64), (64, 1)), start=1):
            state[f"{head}.projection{i}.weight"] = rand(n_out, n_in) * 0.1
            state[f"{head}.projection{i}.bias"] = rand(n_out) * 0.1
        for i, n in enumerate((d, 128, 64), start=1):
            state[f"{head}.bn{i}.weight"] = 1 + 0.1 * rand(n)
            state[f"{head}.bn{i}.bias"] = 0.1 * rand(n)
            state[f"{head}.bn{i}.running_mean"] = 0.1 * rand(n)
            state[f"{head}.bn{i}.running_var"] = 1 + rand(n).abs()
            state[f"{head}.bn{i}.num_batches_tracked"] = torch.tensor(600)
    return state


@pytest.fixture
def dims(tiny_backbone) -> tuple[int, int]:
    return tiny_backbone.model.visual.output_dim, tiny_backbone.grid[0] * tiny_backbone.grid[1]


def _method(backbone, **changes):
    return get_method("inctrl")(InCTRLConfig(**changes), FeatureCache(backbone)).eval()


@pytest.mark.parametrize("container", ["state_dict", "checkpoint_helper"])
def test_released_checkpoint_loads_strictly_and_drives_the_scores(container, tiny_backbone, dims, image_files,
                                                                   tmp_path):
    state = released_layout(*dims, seed=1)
    helper = {"epoch": 5, "model_state": state, "cfg": "SOLVER:\n  MAX_EPOCH: 10\n"}  # the checkpoint helper's dict
    content = state if container == "state_dict" else helper
    path = tmp_path / "checkpoint_6.pyth"
    torch.save(content, path)
    method = _method(tiny_backbone, checkpoint=str(path))
    refs, queries = image_files(2, seed=3, prefix="ref"), image_files(4, seed=4)
    method.set_support([refs], "hex_nut")
    before = method.predict_step(queries, 0)
    method.fit_auxiliary(None, None, 2)  # the file replaces training: neither dataset is read
    loaded = method.model.state_dict()
    assert set(loaded) == {k for k in state if k.startswith(("adapter.", "diff_head"))}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    after = method.predict_step(queries, 0)
    assert not torch.allclose(before.image_scores, after.image_scores)
    by_hand = _method(tiny_backbone)  # the same weights put in place directly
    by_hand.model.load_state_dict({k: v for k, v in state.items() if k in loaded})
    by_hand.set_support([refs], "hex_nut")
    torch.testing.assert_close(after.image_scores, by_hand.predict_step(queries, 0).image_scores, rtol=0, atol=0)


def test_bad_checkpoints_are_one_line_user_errors(tiny_backbone, dims, tmp_path):
    state = released_layout(*dims, seed=2)
    cases: dict[str, object] = {
        "missing": None,
        "garbage": b"not a torch file",
        "unsafe": {"model_state": state, "hook": Path("x")},  # a pickled object weights_only refuses
        "short": {k: v for k, v in state.items() if k != "adapter.fc.2.weight"},
        "alien": {**state, "prompt_learner.ctx": torch.zeros(4)},
        "other_backbone": released_layout(640, 225, seed=2),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.pyth"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        method = _method(tiny_backbone, checkpoint=str(path))
        with pytest.raises(UserError) as err:
            method.fit_auxiliary(None, None, 1)
        assert "\n" not in str(err.value) and str(path) in str(err.value), name


def test_a_sweep_uses_the_released_checkpoint_per_shot_instead_of_training(tiny_backbone, dims, tmp_path, monkeypatch):
    for k in (1, 2):
        torch.save(released_layout(*dims, seed=10 + k), tmp_path / f"inctrl_{k}shot.pyth")
    template = str(tmp_path / "inctrl_{k}shot.pyth")
    monkeypatch.setattr(type(_method(tiny_backbone)), "training_step", lambda *a: pytest.fail("trained"))
    spec = SweepSpec(out=tmp_path / "run", methods=("inctrl",), categories=("hex_nut",), shots=(1, 2), seeds=(0,),
                     pretrained="none", overrides={"inctrl": {"checkpoint": template}})  # fmt: skip
    Sweep(spec).run()
    rows = pd.read_csv(tmp_path / "run" / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["status"]) == {"ok"} and all(math.isfinite(float(v)) for v in rows["value"])
    assert all(f"checkpoint={template}" in f for f in rows["flags"]) and rows["checkpoint_sha"].nunique() == 2
