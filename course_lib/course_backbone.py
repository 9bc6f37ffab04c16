"""The course's own "pretrained" backbone: trained once on SynthAffWild, cached, reused.

Taught in ``02_backbones_and_features``. The ABAW winners start from backbones pretrained on
millions of faces (MAE ViTs, DINOv2). Offline there are no such weights, so the course does
what those papers do in miniature: it pretrains a timm CNN, multi-task and supervised (AU
BCE + EXPR cross-entropy + VA CCC loss) on the synthetic training frames, once, caches the
checkpoint keyed by the data, and from then on uses it frozen as the feature extractor whose
patch tokens the later notebooks cache and train on. On Colab with internet,
``02_backbones_and_features`` shows how to swap in DINOv2 instead.

Sizes per mode (:data:`COURSE_BACKBONE`): smoke mode trains PP-LCNet-0.5 (a CNN designed for
CPUs, 0.1 M parameters once cut after its stride-16 stage) for a few epochs, so that it fits in
seconds on a CPU; full mode trains a ResNet-18 dilated to stride 16. Both give a 7 x 7 grid of
tokens on the data's 112 px faces. The losses are weighted (per-AU positive weights, expression
class weights) as in the ABAW systems, because rare AUs and classes otherwise never reach F1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import cache_dir, get_device
from .models import MTLConfig, MultiTaskModel, backbone_fingerprint, create_backbone
from .models.backbones import Backbone

#: The course backbone per mode: timm name, input size, output stride (token grid), training.
COURSE_BACKBONE: dict[str, dict[str, Any]] = {
    "smoke": {"name": "lcnet_050", "image_size": 112, "backbone_kwargs": {"token_stride": 16}, "epochs": 4,
              "batch_size": 64, "lr": 3e-3},
    "full": {"name": "resnet18", "image_size": 112, "backbone_kwargs": {"output_stride": 16}, "epochs": 15,
             "batch_size": 128, "lr": 1e-3},
}
#: Per-AU positive weights are capped here, so that a rare AU cannot dominate the loss.
MAX_POS_WEIGHT = 10.0


@dataclass
class CourseBackbone:
    """The frozen backbone plus what is known about its training."""

    backbone: Backbone
    fingerprint: str
    path: Path
    settings: dict[str, Any]
    history: "pandas.DataFrame"  # noqa: F821
    scores: dict[str, Any] | None
    seconds: float
    trained_now: bool


def _checkpoint_path(settings: dict[str, Any], data_fingerprint: str) -> Path:
    stride = "-".join(f"{k}{v}" for k, v in sorted(settings["backbone_kwargs"].items()))
    name = f"{settings['name']}-{settings['image_size']}px-{stride}-e{settings['epochs']}-lr{settings['lr']:g}"
    return cache_dir("backbones") / f"course-{name}-{data_fingerprint}.pt"


def _new_backbone(settings: dict[str, Any]) -> Backbone:
    return create_backbone(settings["name"], pretrained=False, image_size=settings["image_size"],
                           **settings["backbone_kwargs"])


def training_config(settings: dict[str, Any]) -> MTLConfig:
    """The model the course backbone is trained in: the backbone of ``settings`` (an entry of
    :data:`COURSE_BACKBONE`) with linear heads on its pooled features, trained end to end."""
    return MTLConfig(backbone=settings["name"], image_size=settings["image_size"], pretrained=False,
                     freeze_backbone=False, cross_attention=False, gcn=False, dropout=0.1,
                     backbone_kwargs=dict(settings["backbone_kwargs"]))


def course_backbone(root: Path | str, mode: str = "smoke", *, device: torch.device | str | None = None,
                    retrain: bool = False, progress_bar: bool = True, **overrides: Any) -> CourseBackbone:
    """The course backbone for the data in ``root``: loaded from the cache, or trained now.

    ``overrides`` change the settings of :data:`COURSE_BACKBONE` (``epochs=1``, ...); the cache
    key includes them and the data's fingerprint, so a different data set trains anew.
    """
    import pandas as pd
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    from .data.abaw import FrameDataset, read_mtl_annotations
    from .data.synth import dataset_fingerprint
    from .train import TrainConfig, fit, save_checkpoint

    root = Path(root)
    settings = {**COURSE_BACKBONE[mode], **overrides}
    path = _checkpoint_path(settings, dataset_fingerprint(root))
    device = torch.device(device) if device is not None else get_device()
    if path.exists() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        backbone = _new_backbone(settings)
        backbone.load_state_dict(saved["backbone"])
        backbone.freeze()
        return CourseBackbone(backbone=backbone.to(device), fingerprint=backbone_fingerprint(backbone), path=path,
                              settings=settings, history=pd.DataFrame(saved["history"]), scores=saved["scores"],
                              seconds=saved["seconds"], trained_now=False)

    train = read_mtl_annotations(root / "training_set_annotations.txt")
    val = read_mtl_annotations(root / "validation_set_annotations.txt")
    augment = v2.Compose([v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2)])
    train_set = FrameDataset(train, root, transform=augment, preload=True)
    val_set = FrameDataset(val, root, preload=True)
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=True, drop_last=True,
                              generator=generator)
    val_loader = DataLoader(val_set, batch_size=256)
    torch.manual_seed(0)
    model = MultiTaskModel(training_config(settings))
    start = time.perf_counter()
    result = fit(model, train_loader, val_loader, input_key="image", device=device, progress_bar=progress_bar,
                 loss_fn=weighted_loss(train), config=TrainConfig(epochs=settings["epochs"], lr=settings["lr"],
                                                                  weight_decay=0.05))
    seconds = time.perf_counter() - start
    backbone = model.backbone
    save_checkpoint(path, {"backbone": backbone.state_dict(), "settings": settings,
                           "history": result.history.to_dict("list"), "scores": result.best_scores,
                           "seconds": seconds})
    backbone.freeze()
    return CourseBackbone(backbone=backbone, fingerprint=backbone_fingerprint(backbone), path=path, settings=settings,
                          history=result.history, scores=result.best_scores, seconds=seconds, trained_now=True)


def weighted_loss(train_table) -> "MultiTaskLoss":  # noqa: F821
    """The multi-task loss with per-AU positive weights and expression class weights of ``train_table``."""
    from .data.abaw import au_pos_weights, expr_class_weights
    from .losses import MultiTaskLoss

    pos_weight = torch.tensor(au_pos_weights(train_table)).clamp(max=MAX_POS_WEIGHT)
    return MultiTaskLoss(pos_weight=pos_weight, class_weights=torch.tensor(expr_class_weights(train_table)))


def course_features(root: Path | str, mode: str = "smoke", *, device: torch.device | str | None = None,
                    progress_bar: bool = True) -> tuple[CourseBackbone, dict]:
    """The course backbone and its cached features (train and validation) for ``root``.

    Every notebook from 03 on starts here: whatever is missing (backbone, features) is
    rebuilt, whatever exists is reused.
    """
    from .features import ensure_features

    cb = course_backbone(root, mode, device=device, progress_bar=progress_bar)
    feats = ensure_features(cb.backbone, root, backbone_fingerprint=cb.fingerprint,
                            image_size=cb.settings["image_size"], device=device, progress_bar=progress_bar)
    return cb, feats
