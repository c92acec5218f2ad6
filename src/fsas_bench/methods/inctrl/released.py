"""The released InCTRL checkpoints (``.pyth``): the trained adapter ψ and heads η, φ out of a whole-model file.

The released training saves ``torch.save(model.state_dict())`` of its whole InCTRL module, or (its
checkpoint helper) a dict ``{"epoch", "model_state", "cfg"[, "scaler_state"]}`` around that state dict. The
module's keys are the trainable parts (``adapter.*``, ``diff_head_ref.*``, ``diff_head.*``, names shared with
:class:`~fsas_bench.methods.inctrl.torch_model.InCTRLModel`) and the frozen CLIP towers, which fsas-bench takes
from the run's backbone instead and skips here.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from fsas_bench.errors import UserError

TRAINABLE_PREFIXES = ("adapter.", "diff_head_ref.", "diff_head.")
FROZEN_CLIP_PREFIXES = ("visual.", "transformer.", "token_embedding.", "ln_final.")
FROZEN_CLIP_NAMES = ("positional_embedding", "text_projection", "logit_scale")


def released_state(path: Path) -> dict[str, Tensor]:
    """The trainable part of a released checkpoint file (either container), read with ``weights_only``.

    Raises:
        UserError: the file is missing, not a torch checkpoint, or holds keys InCTRL does not have.
    """
    hint = "pass a released InCTRL .pyth checkpoint (--set inctrl.checkpoint=PATH)"
    if not path.is_file():
        raise UserError(f"inctrl checkpoint '{path}' not found: {hint}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError):
        raise UserError(
            f"inctrl checkpoint '{path}' is not a weights-only torch file (corrupt, or it pickles objects other "
            f"than tensors and plain values): {hint}"
        ) from None
    state = content.get("model_state", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"inctrl checkpoint '{path}' holds no state dict: {hint}")
    unknown = [k for k in state if not k.startswith(TRAINABLE_PREFIXES + FROZEN_CLIP_PREFIXES)
               and k not in FROZEN_CLIP_NAMES]  # fmt: skip
    if unknown:
        raise UserError(f"inctrl checkpoint '{path}' has keys InCTRL does not have (e.g. '{unknown[0]}'): {hint}")
    return {k: v for k, v in state.items() if k.startswith(TRAINABLE_PREFIXES)}


def load_released(model: nn.Module, path: Path) -> None:
    """Load a released checkpoint's ψ, η, φ into ``model`` (an ``InCTRLModel``) strictly: every trainable key
    present, none extra, shapes equal (a UserError names the mismatch: another backbone's checkpoint)."""
    state = released_state(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(f"inctrl checkpoint '{path}' lacks '{missing[0]}': pass a complete InCTRL checkpoint")
    for key, value in state.items():
        if key not in expected or value.shape != expected[key].shape:
            have = "absent" if key not in expected else tuple(expected[key].shape)
            raise UserError(
                f"inctrl checkpoint '{path}': '{key}' is {tuple(value.shape)} but this backbone's InCTRL has {have}: "
                "use the backbone the checkpoint was trained with (ViT-B-16-plus-240 for the released ones)"
            )
    model.load_state_dict(state, strict=True)
