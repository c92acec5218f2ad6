"""The contrastive pretraining LightningModule: open_clip's CLIP model and its own ``ClipLoss``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import open_clip
import torch
from torch import Tensor, nn

from fsas_bench.backbones.registry import TINY_ARCH, register_shipped_configs

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on the learned temperature


def build_model(arch: str = TINY_ARCH) -> nn.Module:
    """A freshly initialised open_clip model of ``arch`` (initialised from torch's global RNG)."""
    register_shipped_configs()
    return open_clip.create_model(arch, pretrained=None, output_dict=True)


def build_tokenizer(arch: str = TINY_ARCH) -> Callable[[list[str]], Tensor]:
    """open_clip's tokenizer of ``arch`` (texts → ``T × context_length`` long tensor)."""
    register_shipped_configs()
    return open_clip.get_tokenizer(arch)


class ClipPretrainer(L.LightningModule):
    """CLIP pretraining: symmetric InfoNCE (``open_clip.ClipLoss``) over a batch of image–caption pairs.

    Args:
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay of weight matrices (gains, biases, embeddings and the
            temperature are not decayed).
        warmup_steps: linear warmup, followed by cosine decay to zero.
        visual_lr_decay: layer-wise learning-rate decay of the image tower: block i of d trains at
            ``lr · decay^(d − i)``, the patch/position embeddings at ``lr · decay^(d + 1)``, the head at ``lr``
            (1 = uniform). Keeps the early blocks' patch tokens close to local appearance.
        arch: open_clip architecture.
    """

    def __init__(
        self, lr: float, weight_decay: float, warmup_steps: int, visual_lr_decay: float = 1.0, arch: str = TINY_ARCH
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(arch)
        self.loss = open_clip.ClipLoss()

    def batch_loss(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Contrastive loss of ``B × 3 × S × S`` images against their ``B × L`` caption tokens; the towers may
        run under autocast, the similarities and the loss are always float32."""
        out = self.model(images, tokens)
        with torch.autocast(images.device.type, enabled=False):
            return self.loss(*(out[k].float() for k in ("image_features", "text_features", "logit_scale")))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.batch_loss(*batch)
        self.log("loss", loss, prog_bar=True)
        self.log("temperature", 1.0 / self.model.logit_scale.exp(), prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def configure_optimizers(self) -> dict[str, Any]:
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        depth = len(self.model.visual.transformer.resblocks)
        for name, param in self.model.named_parameters():
            decayed = param.ndim >= 2 and "embedding" not in name
            lr = self.hparams.lr * self.hparams.visual_lr_decay ** _visual_distance(name, depth)
            groups.setdefault((lr, self.hparams.weight_decay if decayed else 0.0), []).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()],
            betas=(0.9, 0.98), eps=1e-6,
        )  # fmt: skip
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(self.hparams.warmup_steps, total // 2)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _visual_distance(name: str, depth: int) -> int:
    """How many layers below the image tower's head a parameter sits (0 outside the image tower)."""
    if not name.startswith("visual.") or name.startswith(("visual.ln_post", "visual.proj")):
        return 0
    if name.startswith("visual.transformer.resblocks."):
        return depth - int(name.split(".")[3])
    return depth + 1
