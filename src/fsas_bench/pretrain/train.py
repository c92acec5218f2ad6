"""The reproducible pretraining run: render the pairs, fit with a Lightning Trainer on CPU, export fp16 weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import open_clip
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from fsas_bench.backbones.registry import TINY_ARCH
from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write
from fsas_bench.pretrain.data import CaptionedPairs, TwinSampler
from fsas_bench.pretrain.module import ClipPretrainer, build_tokenizer
from fsas_bench.pretrain.pairs import render_pairs


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run (defaults: the recipe of the shipped ``fsas-synthetic`` weights).

    Attributes:
        out: the exported weights (fp16 safetensors); checkpoints and the loss log go to ``<out>.run/``.
        seed: seed of the initialisation, the pair renderings, the shuffles, augmentations and captions.
        epochs: passes over the pairs.
        items_per_category: twins (normal + defective) rendered per category.
        batch_size: pairs per step (even: twins share a batch).
        lr: peak learning rate.
        weight_decay: AdamW weight decay of weight matrices.
        warmup_steps: linear warmup steps before the cosine decay.
        visual_lr_decay: layer-wise learning-rate decay of the image tower (see `ClipPretrainer`).
        workers: processes rendering the pairs.
        threads: torch CPU threads while training (results are bit-identical for a fixed thread count).
        resume: continue from ``<out>.run/checkpoints/last.ckpt``.
    """

    out: Path
    seed: int = 0
    epochs: int = 9
    items_per_category: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    visual_lr_decay: float = 0.7
    workers: int = 2
    threads: int = 2
    resume: bool = False


def checkpoint_dir(out: Path) -> Path:
    """Where a run writing ``out`` keeps its resumable Lightning checkpoints (its loss log is in ``../logs``)."""
    return out.with_name(out.name + ".run") / "checkpoints"


def pretrain(config: PretrainConfig, progress: bool = True) -> Path:
    """Train the tiny CLIP and write its weights to ``config.out``; returns that path.

    Raises:
        UserError: ``resume`` without a checkpoint, no epochs, an odd batch size, or an output folder that does
            not exist.
    """
    last = checkpoint_dir(config.out) / "last.ckpt"
    if config.resume and not last.is_file():
        raise UserError(f"no checkpoint to resume at '{last}': run once without --resume first")
    if config.epochs < 1:
        raise UserError(f"--epochs {config.epochs} is invalid: use a positive number of passes")
    if config.batch_size < 2 or config.batch_size % 2:
        raise UserError(f"batch size {config.batch_size} is invalid: use an even number (twins share a batch)")
    if not config.out.parent.is_dir():
        raise UserError(f"output folder '{config.out.parent}' does not exist: create it or choose another --out")
    L.seed_everything(config.seed, verbose=False)
    module = ClipPretrainer(config.lr, config.weight_decay, config.warmup_steps, config.visual_lr_decay)
    cfg = open_clip.get_model_preprocess_cfg(module.model)
    pairs = render_pairs(config.seed, config.items_per_category, cfg["size"][0], config.workers)
    dataset = CaptionedPairs(pairs, config.seed, cfg["mean"], cfg["std"], build_tokenizer())
    loader = DataLoader(dataset, config.batch_size, sampler=TwinSampler(len(dataset), config.seed), drop_last=True)
    callbacks: list[L.Callback] = [ModelCheckpoint(dirpath=last.parent, save_last=True)]  # every epoch end
    if progress:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="bf16-mixed", max_epochs=config.epochs, callbacks=callbacks,
        logger=CSVLogger(last.parent.parent, name="logs"), log_every_n_steps=10, gradient_clip_val=1.0,
        enable_progress_bar=progress, enable_model_summary=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        trainer.fit(module, loader, ckpt_path=str(last) if config.resume else None)
    finally:
        torch.set_num_threads(threads)
    recipe = {key: value for key, value in asdict(config).items() if key not in ("out", "workers", "threads", "resume")}
    save_weights(module.model, config.out, {"arch": TINY_ARCH, **recipe})
    return config.out


def save_weights(model: nn.Module, path: Path, metadata: dict[str, object]) -> None:
    """Write the model's state dict as fp16 safetensors (atomically), with ``metadata`` as JSON strings."""
    tensors = {name: t.detach().to(torch.float16).contiguous() for name, t in model.state_dict().items()}
    strings = {key: json.dumps(value) for key, value in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=strings), "weights")
