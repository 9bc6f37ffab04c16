"""The course backbone: pretrained once on other faces and shipped, or trained from scratch.

Taught in ``02_backbones_and_features``. Every ABAW system starts from a backbone pretrained on
far more faces than the target set (000: an EfficientNet trained on AffectNet expressions;
001: an MAE ViT; 002: DINOv2; 003: a face-recognition IResNet). The course's is
``course_face`` (:mod:`course_lib.pretrain`): pretrained on thousands of synthetic identities
that no course split uses, shipped as ``course_lib/weights/weights.safetensors`` with its model
card. :func:`course_backbone` loads it, frozen, in seconds: it trains nothing.

``from_scratch=True`` instead trains a backbone on the course's own training split (the recipe
of the ``"course_backbone"`` row of :mod:`course_lib.budgets`: a timm CNN, multi-task and
supervised with the weighted AU BCE, EXPR cross-entropy and VA CCC losses, cached keyed by the
data). ``02`` shows why this is not
the default: on a few dozen videos the network learns who is in the video, not what the face
does. Both give a 7 x 7 grid of tokens on the data's 112 px faces. On Colab with internet,
``02`` shows how to swap in DINOv2 instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from .budgets import budget
from .config import cache_dir, get_device, seeded
from .data.abaw import read_split
from .data.datasets import FrameDataset
from .data.synth import dataset_fingerprint
from .features import ensure_features
from .losses import weighted_loss
from .models import MTLConfig, MultiTaskModel, backbone_fingerprint, create_backbone
from .models.backbones import COURSE_FACE, COURSE_FACE_ARCH, COURSE_FACE_WEIGHTS, Backbone
from .train import TrainConfig, fit, save_checkpoint

@dataclass
class CourseBackbone:
    """The frozen backbone plus what is known about its training (``scores``: the validation
    P_MTL of a from-scratch backbone, or the probe R² of the pretrained one's model card)."""

    backbone: Backbone
    fingerprint: str
    path: Path
    settings: dict[str, Any]
    history: pd.DataFrame
    scores: dict[str, Any] | None
    seconds: float
    trained_now: bool

    @property
    def pretrained(self) -> bool:
        """True for the shipped ``course_face`` backbone, False for one trained from scratch here."""
        return bool(self.settings.get("pretrained"))

    def summary(self) -> str:
        """One line: what this backbone is and how it was trained."""
        if self.pretrained:
            card = self.settings.get("card", {})
            data, probe = card.get("data", {}), card.get("course_probe") or {}
            line = (f"{self.settings['name']} ({self.settings['timm_name']} cut at stride "
                    f"{self.settings['token_stride']}), pretrained on {card.get('frames_seen', '?')} frames of "
                    f"{data.get('identities', '?')} other identities")
            return line + (f"; AU probe R2 {probe['mean']:.2f} on unseen people" if "mean" in probe else "")
        return (f"{self.settings['name']} trained from scratch on this data's training split for "
                f"{self.settings['epochs']} epochs, validation P_MTL {self.scores['total']:.3f}")


def _checkpoint_path(settings: dict[str, Any], data_fingerprint: str, seed: int) -> Path:
    stride = "-".join(f"{k}{v}" for k, v in sorted(settings["backbone_kwargs"].items()))
    name = f"{settings['name']}-{settings['image_size']}px-{stride}-e{settings['epochs']}-lr{settings['lr']:g}"
    name += f"-s{seed}" if seed else ""
    return cache_dir("backbones") / f"course-{name}-{data_fingerprint}.pt"


def _new_backbone(settings: dict[str, Any]) -> Backbone:
    return create_backbone(settings["name"], pretrained=False, image_size=settings["image_size"],
                           **settings["backbone_kwargs"])


def training_config(settings: dict[str, Any]) -> MTLConfig:
    """The model the course backbone is trained in: the backbone of ``settings`` (an entry of
    the ``"course_backbone"`` budget) with linear heads on its pooled features, trained end to end."""
    return MTLConfig(backbone=settings["name"], image_size=settings["image_size"], pretrained=False,
                     freeze_backbone=False, cross_attention=False, gcn=False, dropout=0.1,
                     backbone_kwargs=dict(settings["backbone_kwargs"]))


def pretrained_backbone(device: torch.device | str | None = None) -> CourseBackbone | None:
    """The shipped ``course_face`` backbone, frozen, with its model card; None without the file."""
    if not COURSE_FACE_WEIGHTS.exists():
        return None
    start = time.perf_counter()
    backbone = create_backbone(COURSE_FACE, pretrained=True, image_size=COURSE_FACE_ARCH["image_size"]).freeze()
    card_path = COURSE_FACE_WEIGHTS.with_name("model_card.json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    device = torch.device(device) if device is not None else get_device()
    settings = {"name": COURSE_FACE, "image_size": COURSE_FACE_ARCH["image_size"], "backbone_kwargs": {},
                "pretrained": True, "timm_name": COURSE_FACE_ARCH["timm_name"],
                "token_stride": COURSE_FACE_ARCH["token_stride"], "card": card}
    return CourseBackbone(backbone=backbone.to(device), fingerprint=backbone_fingerprint(backbone),
                          path=COURSE_FACE_WEIGHTS, settings=settings, history=pd.DataFrame(card.get("history", [])),
                          scores=card.get("course_probe"), seconds=time.perf_counter() - start, trained_now=False)


def course_backbone(root: Path | str, mode: str = "smoke", *, device: torch.device | str | None = None,
                    from_scratch: bool = False, retrain: bool = False, progress_bar: bool = True,
                    seed: int = 0, **overrides: Any) -> CourseBackbone:
    """The course backbone for the data in ``root``: the shipped pretrained one, or one trained
    from scratch on ``root``'s training split (``from_scratch=True``, or when the weights file is
    missing; then loaded from the cache, or trained now).

    ``overrides`` change the from-scratch settings of the ``"course_backbone"`` budget (``epochs=1``, ...);
    the cache key includes them and the data's fingerprint, so a different data set trains anew.
    ``seed`` seeds the from-scratch initialisation and batch order.
    """
    if not from_scratch:
        pretrained = pretrained_backbone(device)
        if pretrained is not None:
            if overrides or retrain:
                raise ValueError(f"retrain and {sorted(overrides)} are settings of a backbone trained from scratch: "
                                 "pass from_scratch=True (the pretrained one is loaded as shipped)")
            return pretrained
        print(f"{COURSE_FACE_WEIGHTS} not found: training a backbone from scratch on the course split instead")
    root = Path(root)
    settings = {**budget("course_backbone", mode), **overrides}
    path = _checkpoint_path(settings, dataset_fingerprint(root), seed)
    device = torch.device(device) if device is not None else get_device()
    if path.exists() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        backbone = _new_backbone(settings)
        backbone.load_state_dict(saved["backbone"])
        backbone.freeze()
        return CourseBackbone(backbone=backbone.to(device), fingerprint=backbone_fingerprint(backbone), path=path,
                              settings=settings, history=pd.DataFrame(saved["history"]), scores=saved["scores"],
                              seconds=saved["seconds"], trained_now=False)

    train = read_split(root, "train")
    val = read_split(root, "validation")
    augment = v2.Compose([v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2)])
    train_set = FrameDataset(train, root, transform=augment, preload=True)
    val_set = FrameDataset(val, root, preload=True)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=settings["batch_size"], shuffle=True, drop_last=True,
                              generator=generator)
    val_loader = DataLoader(val_set, batch_size=256)
    start = time.perf_counter()
    # initial weights, augmentation and dropout all from ``seed``, without touching the caller's stream
    with seeded(seed):
        model = MultiTaskModel(training_config(settings))
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


def course_features(root: Path | str, mode: str = "smoke", *, device: torch.device | str | None = None,
                    progress_bar: bool = True, from_scratch: bool = False, test: bool = False
                    ) -> tuple[CourseBackbone, dict]:
    """The course backbone and its cached features (train and validation; with ``test``, the test list's
    frames too) for ``root``.

    Every notebook from 03 on starts here: whatever is missing (backbone, features) is
    rebuilt, whatever exists is reused.
    """
    cb = course_backbone(root, mode, device=device, progress_bar=progress_bar, from_scratch=from_scratch)
    splits = ("train", "validation", "test") if test else ("train", "validation")
    feats = ensure_features(cb.backbone, root, backbone_fingerprint=cb.fingerprint, splits=splits,
                            image_size=cb.settings["image_size"], device=device, progress_bar=progress_bar)
    return cb, feats
