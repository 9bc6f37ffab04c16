"""Explanations of the multi-task model: Captum attributions per task head.

Taught in ``09_explanations``. Captum explains a model that returns one number per example;
the course's model returns three heads at once. So the pieces here are:

- :class:`TargetOutput`: the multi-task model seen through one output, e.g. the AU12 logit,
  the Happiness logit or valence, as a module that maps images (B, 3, H, W) to (B,).
- :func:`course_image_model`: a model over *pixels* to explain. The course trains its heads on
  cached tokens of the frozen course backbone; the same heads on top of that backbone
  make an image model with exactly the same outputs (up to the float16 of the cache).
- :func:`attribute`: one (B, H, W) map per image for a head and target, from Saliency,
  Integrated Gradients (plain and with a noise tunnel), GradientSHAP, Occlusion or Grad-CAM,
  or the model's own cross-attention for that output's query.

Whether the maps point at the AU's true region is :mod:`course_lib.localization`; whether they
depend on what the model learned (the model randomisation test) is :mod:`course_lib.randomization`.

Gradients and a frozen backbone: a :class:`~course_lib.models.MultiTaskModel` runs a frozen
backbone without autograd (cheaper training). Attribution needs the gradient with respect to
the pixels, so :class:`TargetOutput` lets gradients flow through the backbone during its
forward pass; the backbone's weights stay frozen (``requires_grad=False``, eval mode).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from .budgets import BUDGETS, budget
from .config import cache_dir, seeded
from .course_backbone import CourseBackbone, course_features
from .data.abaw import read_split
from .data.datasets import FrameDataset
from .features import CachedFrameDataset
from .labels import AU_NAMES, EXPR_NAMES
from .losses import weighted_loss
from .models import MTLConfig, MultiTaskModel
from .models.cross_attention import AU_SLICE, EXPR_SLICE, VA_SLICE, attention_maps
from .recipes import train_on_features
from .train import TrainConfig, save_checkpoint

#: The three task heads of the multi-task model.
HEADS: tuple[str, ...] = ("au", "expr", "va")
#: The names of the two VA outputs.
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
#: The targets of each head, by name; an index into the head's output works too.
TARGETS: dict[str, tuple[str, ...]] = {"au": AU_NAMES, "expr": EXPR_NAMES, "va": VA_NAMES}
#: Where each head's queries sit among the 22 of the cross-attention.
_QUERY_OFFSET: dict[str, int] = {"au": AU_SLICE.start, "expr": EXPR_SLICE.start, "va": VA_SLICE.start}
#: The attribution methods of :func:`attribute`, in the order the course shows them.
METHODS: tuple[str, ...] = ("saliency", "integrated_gradients", "noise_tunnel", "gradient_shap", "occlusion",
                            "grad_cam", "attention")
#: Readable names for plots and tables.
METHOD_LABELS: dict[str, str] = {
    "saliency": "Saliency", "integrated_gradients": "Integrated Gradients", "noise_tunnel": "IG + SmoothGrad",
    "gradient_shap": "GradientSHAP", "occlusion": "Occlusion", "grad_cam": "Grad-CAM", "attention": "attention",
}

Sign = Literal["positive", "absolute", "signed"]
Target = int | str


# --------------------------------------------------------------------------- one output as a module


def target_index(head: str, target: Target) -> int:
    """The position of ``target`` in ``head``'s output: ``("au", "AU12") -> 6``, ``("va", "arousal") -> 1``.

    ``target`` is a name from :data:`TARGETS` or an index; anything else raises ``ValueError``
    that lists what is valid.
    """
    if head not in TARGETS:
        raise ValueError(f"unknown head {head!r}: use one of {list(HEADS)}")
    names = TARGETS[head]
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < len(names):
            raise ValueError(f"target index {target} is out of range for head {head!r} "
                             f"(0..{len(names) - 1}: {', '.join(names)})")
        return int(target)
    if isinstance(target, str) and target in names:
        return names.index(target)
    raise ValueError(f"unknown target {target!r} for head {head!r}: use one of {list(names)} or an index")


def target_indices(head: str, target: Target | Sequence[Target], batch_size: int) -> torch.Tensor:
    """One target index per example (int64, (batch_size,)): a single target is repeated."""
    if isinstance(target, (str, int, np.integer)):
        return torch.full((batch_size,), target_index(head, target), dtype=torch.int64)
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    indices = [target_index(head, t) for t in target]
    if len(indices) != batch_size:
        raise ValueError(f"{len(indices)} targets for a batch of {batch_size} images: give one target, "
                         "or one per image")
    return torch.tensor(indices, dtype=torch.int64)


@contextlib.contextmanager
def gradients_through_backbone(model: nn.Module) -> Iterator[None]:
    """Within the block, a frozen backbone of ``model`` passes gradients to its input pixels.

    Its weights stay frozen (``requires_grad=False``) and it stays in eval mode; only the
    ``frozen`` switch that makes :meth:`MultiTaskModel.tokens` skip autograd is lifted.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None or not getattr(backbone, "frozen", False):
        yield
        return
    backbone.frozen = False
    try:
        yield
    finally:
        backbone.frozen = True


class HeadOutput(nn.Module):
    """The multi-task model seen through one head: images -> (B, K) for AU (12), EXPR (8) or VA (2).

    ``probability=True`` turns AU logits into sigmoid probabilities and EXPR logits into softmax
    probabilities (VA has no such option: it is already a value in [-1, 1]). Logits are the
    default: a probability saturates near 0 and 1, where its gradients vanish (``09`` shows it).
    """

    def __init__(self, model: nn.Module, head: str, probability: bool = False) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}: use one of {list(HEADS)}")
        if probability and head == "va":
            raise ValueError("probability=True is for the 'au' and 'expr' heads; 'va' outputs values")
        self.model = model
        self.head = head
        self.probability = probability

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with gradients_through_backbone(self.model):
            out = self.model(images)[self.head]
        if self.probability:
            out = torch.sigmoid(out) if self.head == "au" else out.softmax(-1)
        return out


class TargetOutput(nn.Module):
    """One scalar per example from the multi-task model: images (B, 3, H, W) -> (B,).

    ``head``: ``"au"``, ``"expr"`` or ``"va"``. ``target``: an AU name (``"AU12"``) or index,
    an expression name (``"Happiness"``) or index, ``"valence"``/``"arousal"`` (or 0/1).
    The output is the AU's logit, the expression's logit (``probability=True``: the AU's
    sigmoid probability, the expression's softmax probability), or the VA value. This is
    what Captum's attribution methods take as their ``forward_func``.
    """

    def __init__(self, model: nn.Module, head: str, target: Target, probability: bool = False) -> None:
        super().__init__()
        self.index = target_index(head, target)
        self.name = TARGETS[head][self.index]
        self.outputs = HeadOutput(model, head, probability)

    @property
    def head(self) -> str:
        return self.outputs.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.outputs(images)[:, self.index]

    def extra_repr(self) -> str:
        return f"head={self.head!r}, target={self.name!r}, probability={self.outputs.probability}"


# --------------------------------------------------------------------------- the image model to explain


@dataclass
class ImageModel:
    """What :func:`course_image_model` returns: the image model and what is known about its heads."""

    model: MultiTaskModel
    course_backbone: CourseBackbone
    settings: dict[str, Any]
    scores: dict[str, Any] | None
    seconds: float
    trained_now: bool
    path: Path
    max_difference: float  # largest |image model - token model| output on a few validation frames

    @property
    def image_size(self) -> int:
        return int(self.course_backbone.settings["image_size"])

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.course_backbone.backbone.grid_size


def _heads_config(token_dim: int, settings: dict[str, Any]) -> MTLConfig:
    return MTLConfig(token_dim=token_dim, dim=settings["dim"], depth=settings["depth"], heads=settings["heads"],
                     cross_attention=True, gcn=False, dropout=0.1)


def course_image_model(root: Path | str, mode: str = "smoke", *, seed: int = 0, device: torch.device | str | None = None,
                       retrain: bool = False, progress_bar: bool = True, **overrides: Any) -> ImageModel:
    """A multi-task model over images: the frozen course backbone plus heads trained on its tokens.

    The heads (task-adaptive cross-attention as in ``03``, no AU graph, sizes of
    the ``"explain_heads"`` budget for ``mode``, changed by ``overrides``) are trained with
    :func:`course_lib.recipes.train_on_features` on the cached tokens of :func:`course_lib.course_backbone.course_features`,
    cached under ``cache_dir("explain")`` (keyed by the backbone's weights, the settings and
    ``seed``) and reused. The image model is ``MultiTaskModel(MTLConfig(backbone=...))`` with the
    course backbone's weights in its backbone and the trained heads' weights everywhere else;
    it is returned on ``device`` (default CPU: explanations run per image) in eval mode.
    """
    root = Path(root)
    settings = {**budget("explain_heads", mode), **overrides}
    unknown = set(settings) - set(BUDGETS["explain_heads"]["smoke"])
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}: use {sorted(BUDGETS['explain_heads']['smoke'])}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cb, feats = course_features(root, mode, device=device, progress_bar=progress_bar)
    token_dim = feats["train"].dim
    config = _heads_config(token_dim, settings)
    key = hashlib.sha256(json.dumps({"backbone": cb.fingerprint, "settings": settings, "seed": seed,
                                     "config": asdict(config)}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir("explain") / f"heads-{cb.settings['name']}-{key}.pt"
    train = read_split(root, "train")
    val = read_split(root, "validation")
    val_set = CachedFrameDataset(feats["validation"], val, what="tokens")

    if path.exists() and not retrain:
        with seeded(seed):  # initial weights, replaced at once by the saved ones
            heads = MultiTaskModel(config)
        saved = torch.load(path, map_location="cpu", weights_only=False)
        heads.load_state_dict(saved["heads"])
        scores, seconds, trained_now = saved["scores"], saved["seconds"], False
    else:
        train_set = CachedFrameDataset(feats["train"], train, what="tokens")
        trained = train_on_features(lambda: MultiTaskModel(config), train_set, val_set, loss_fn=weighted_loss(train),
                                    seed=seed, batch_size=settings["batch_size"],
                                    config=TrainConfig(epochs=settings["epochs"], lr=settings["lr"], seed=seed),
                                    device=device, progress_bar=progress_bar)
        heads, result = trained.model, trained.result
        scores, seconds, trained_now = result.best_scores, result.seconds, True
        save_checkpoint(path, {"heads": {k: v.cpu() for k, v in heads.state_dict().items()}, "settings": settings,
                               "scores": scores, "seconds": seconds, "history": result.history.to_dict("list")})

    image_config = MTLConfig(**{**asdict(config), "token_dim": None, "backbone": cb.settings["name"],
                                "image_size": cb.settings["image_size"], "pretrained": False,
                                "freeze_backbone": True, "backbone_kwargs": dict(cb.settings["backbone_kwargs"])})
    with seeded(seed):  # every weight is loaded below; only the caller's random stream is spared
        model = MultiTaskModel(image_config)
    model.backbone.load_state_dict(cb.backbone.state_dict())
    missing, unexpected = model.load_state_dict(heads.state_dict(), strict=False)
    stray = [k for k in missing if not k.startswith("backbone.")]
    if stray or unexpected:  # pragma: no cover - the two configs differ only in the backbone
        raise RuntimeError(f"the heads do not fit the image model: missing {stray}, unexpected {unexpected}")
    model.to(device).eval()
    heads.to(device).eval()

    # The image model must compute what the heads computed on the cached tokens.
    rows = list(range(min(8, len(val))))
    images = torch.stack([FrameDataset(val.iloc[rows], root)[i]["image"] for i in range(len(rows))]).to(device)
    tokens = torch.stack([val_set[i]["tokens"] for i in rows]).to(device)
    with torch.no_grad():
        a, b = model(images), heads(tokens)
    difference = max(float((a[k] - b[k]).abs().max()) for k in HEADS)
    return ImageModel(model=model, course_backbone=cb, settings=settings, scores=scores, seconds=float(seconds),
                      trained_now=trained_now, path=path, max_difference=difference)


# --------------------------------------------------------------------------- attributions


def baseline_images(images: torch.Tensor, kind: str | float | torch.Tensor = "blur", sigma: float = 6.0) -> torch.Tensor:
    """The reference images ("absence of evidence") that IG, GradientSHAP and Occlusion compare with.

    ``"black"`` (zeros), ``"gray"`` (0.5), ``"blur"`` (each image Gaussian-blurred with
    ``sigma`` pixels: colours and the face's layout stay, the fine detail that AUs change goes),
    a number (a constant image) or a tensor broadcastable to ``images``. There is no neutral
    choice: black is far from every face, blur is close to it (``09`` compares them).
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(images).expand_as(images).clone()
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(images, float(kind))
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "gray":
        return torch.full_like(images, 0.5)
    if kind == "blur":
        size = 2 * int(round(3 * sigma)) + 1
        return gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])
    raise ValueError(f"unknown baseline {kind!r}: use 'black', 'gray', 'blur', a number or a tensor")


def find_feature_layer(model: nn.Module) -> nn.Module:
    """The last module of a CNN backbone whose output is the token feature map (for Grad-CAM).

    Found by running one image and keeping the last module (in execution order) whose output
    has shape (1, C, h, w) with the backbone's ``num_features`` and ``grid_size``.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None or getattr(backbone, "family", None) != "cnn":
        raise ValueError("Grad-CAM here needs a model with a CNN backbone: pass layer= yourself")
    want = (backbone.num_features, *backbone.grid_size)
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(mod)
                                     if torch.is_tensor(out) and tuple(out.shape[1:]) == want else None)
             for m in backbone.model.modules() if m is not backbone.model]
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=backbone.mean.device))
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError(f"no layer of {backbone.name} outputs the {want} feature map: pass layer= yourself")
    return seen[-1]


def _reduce(attribution: torch.Tensor, sign: Sign) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W): sum over channels, then keep the positive part, the magnitude, or the sign."""
    summed = attribution.sum(1)
    if sign == "positive":
        return summed.clamp(min=0)
    if sign == "absolute":
        return summed.abs()
    if sign == "signed":
        return summed
    raise ValueError(f"sign={sign!r}: use 'positive', 'absolute' or 'signed'")


def attention_attribution(model: nn.Module, images: torch.Tensor, head: str, target: Target | Sequence[Target],
                          which: Literal["last", "mean"] = "mean") -> torch.Tensor:
    """The model's cross-attention of the target's query, upsampled to the image: (B, H, W).

    Averaged over heads (and blocks, ``which="mean"``), as in ``03``; bilinear upsampling
    from the token grid. Each map's mean is 1 / (h w) of the grid's mass per token cell.
    """
    if getattr(model, "encoder", None) is None or getattr(model, "backbone", None) is None:
        raise ValueError("the 'attention' method needs an image model with cross-attention")
    index = target_indices(head, target, len(images)).to(images.device) + _QUERY_OFFSET[head]
    with torch.no_grad():
        out = model(images, return_attention=True)
    maps = attention_maps(out["attention"], model.backbone.grid_size, which=which)  # (B, 22, h, w)
    chosen = maps[torch.arange(len(images), device=images.device), index]
    return F.interpolate(chosen[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def attribute(model: nn.Module, images: torch.Tensor, head: str, target: Target | Sequence[Target],
              method: str = "integrated_gradients", *, sign: Sign = "positive",
              baseline: str | float | torch.Tensor = "blur", probability: bool = False, n_steps: int = 16,
              nt_samples: int = 4, nt_stdev: float = 0.1, n_samples: int = 16, window: int = 8, stride: int = 8,
              layer: nn.Module | None = None, internal_batch_size: int | None = 256,
              return_delta: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attribution maps (B, H, W) for ``images`` (B, 3, H, W) in [0, 1] and one output of ``model``.

    ``head``/``target`` pick the output as in :class:`TargetOutput`; ``target`` may also be one
    target per image. ``method`` (one of :data:`METHODS`):

    - ``"saliency"``: |gradient| of the output at the image (Simonyan et al. 2014).
    - ``"integrated_gradients"``: (x - baseline) times the gradient averaged along the straight
      path from ``baseline`` to x, ``n_steps`` points (Sundararajan et al. 2017). Its
      attributions add up to f(x) - f(baseline) (completeness; ``return_delta=True`` also
      returns the per-image error of that sum, from Captum).
    - ``"noise_tunnel"``: the IG maps averaged over ``nt_samples`` copies of the image with
      Gaussian noise of ``nt_stdev`` (SmoothGrad, Smilkov et al. 2017).
    - ``"gradient_shap"``: expected gradients over random points between noisy copies of the image
      and references drawn from {baseline images, black, gray}, ``n_samples`` per image.
    - ``"occlusion"``: the output's drop when a ``window`` x ``window`` patch is replaced by the
      baseline, moved by ``stride`` pixels (Zeiler and Fergus 2014). The default 8 px patches at
      112 px are no larger than the thinnest AU region (the lips of AU23, under 2 % of the frame);
      16 px patches cannot land inside it.
    - ``"grad_cam"``: Grad-CAM (Selvaraju et al. 2017) on ``layer`` (default: the backbone layer
      that makes the tokens, :func:`find_feature_layer`), upsampled bilinearly to the image with
      Captum's ``LayerAttribution.interpolate``.
    - ``"attention"``: not a gradient at all: the model's own cross-attention of that output's
      query (:func:`attention_attribution`); ``sign`` does not apply (it is never negative).

    Per-pixel attributions of the gradient methods are summed over the 3 colour channels and
    then reduced by ``sign``: ``"positive"`` (default) keeps the evidence *for* the output
    (the part that raised it), ``"absolute"`` the magnitude either way, ``"signed"`` both.
    Saliency is a magnitude already. ``baseline``: see :func:`baseline_images`. ``probability``:
    explain the AU/EXPR probability instead of the logit. The model runs in eval mode (its
    mode is restored afterwards); results are detached float32 on the images' device.
    """
    # captum takes about 1.5 s to import: only when something is attributed
    from captum.attr import (GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel,
                             Occlusion, Saliency)

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {list(METHODS)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, 3, H, W)")
    images = images.detach().float().requires_grad_(method != "attention")
    targets = target_indices(head, target, len(images)).to(images.device)
    was_training = model.training
    model.eval()
    try:
        if method == "attention":
            maps = attention_attribution(model, images, head, targets.tolist())
            return (maps, torch.zeros(len(images))) if return_delta else maps
        forward = HeadOutput(model, head, probability)
        reference = baseline_images(images, baseline)
        delta = None
        if method == "saliency":
            attr = Saliency(forward).attribute(images, target=targets, abs=True)
        elif method == "integrated_gradients":
            out = IntegratedGradients(forward).attribute(images, baselines=reference, target=targets,
                                                         n_steps=n_steps, internal_batch_size=internal_batch_size,
                                                         return_convergence_delta=return_delta)
            attr, delta = out if return_delta else (out, None)
        elif method == "noise_tunnel":
            attr = NoiseTunnel(IntegratedGradients(forward)).attribute(
                images, nt_type="smoothgrad", nt_samples=nt_samples, nt_samples_batch_size=max(1, len(images)),
                stdevs=nt_stdev, baselines=reference, target=targets, n_steps=n_steps,
                internal_batch_size=internal_batch_size)
        elif method == "gradient_shap":
            pool = torch.cat([reference, torch.zeros_like(images[:1]), torch.full_like(images[:1], 0.5)])
            attr = GradientShap(forward).attribute(images, baselines=pool, target=targets, n_samples=n_samples,
                                                   stdevs=0.05)
        elif method == "occlusion":
            attr = Occlusion(forward).attribute(images, sliding_window_shapes=(3, window, window),
                                                strides=(3, stride, stride), baselines=reference, target=targets,
                                                perturbations_per_eval=max(1, 256 // max(1, len(images))))
        else:  # grad_cam
            layer = layer if layer is not None else find_feature_layer(model)
            cam = LayerGradCam(forward, layer).attribute(images, target=targets,
                                                         relu_attributions=False)
            attr = LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
        maps = _reduce(attr.detach().float(), sign)
        if return_delta:
            return maps, (delta.detach() if delta is not None else torch.full((len(images),), float("nan")))
        return maps
    finally:
        model.train(was_training)


__all__ = ["HEADS", "HeadOutput", "ImageModel", "METHODS", "METHOD_LABELS", "TARGETS",
           "TargetOutput", "VA_NAMES", "attention_attribution", "attribute", "baseline_images",
           "course_image_model", "find_feature_layer", "gradients_through_backbone", "target_index",
           "target_indices"]
