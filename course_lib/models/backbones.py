"""Image backbones from timm that turn face crops into a grid of patch tokens.

Taught in ``02`` (frozen features: CNN vs ViT vs DINOv2). :func:`create_backbone` builds one
of three families and wraps it in :class:`Backbone`, which always answers the same way:

- ``tokens`` (B, N, C): one feature vector per image region. For a CNN the last feature map
  flattened row by row (N = h * w); for a ViT or DINOv2 the patch tokens, without the class
  and register tokens.
- ``pooled`` (B, C): one vector per image, from the model's own timm head: global average
  pooling for a CNN, the (final-normed) class token for ViT and DINOv2 (their timm default,
  ``global_pool="token"``).

Images go in as floats in [0, 1]; the wrapper applies the model's own mean/std (a buffer,
so it follows ``.to(device)``) and resizes images of another size to ``image_size``, so the
token grid is always ``grid_size``.

Grids at 112 px: a CNN has stride 32 (a 4 x 4 grid) unless ``output_stride`` asks timm to
dilate the last stages: 16 (the default here, 7 x 7) or 8 (14 x 14). A ViT gets ``img_size``
(112 / 16 = 7 x 7 patches; ``patch_size=8`` gives 14 x 14); DINOv2 (patch 14) needs a
multiple of 14 and the size is rounded to one (112 = 8 x 14 already is).

``pretrained=True`` never downloads when :func:`course_lib.config.is_offline` is true; then,
or when the download fails, it prints one line and uses random weights
(``pretrained_loaded`` tells which happened).

``"course_face"`` names the course's own backbone: timm's ``resnet10t`` cut after its stride-16
stage, pretrained by ``python -m course_lib.pretrain`` on faces of thousands of synthetic
identities that no course split uses. Its weights ship with the course
(``course_lib/weights/weights.safetensors``, with ``MODEL_CARD.md``) and load the timm way,
from the file, offline: ``create_backbone("course_face", pretrained=True)``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from ..config import is_offline

Family = Literal["cnn", "vit", "dinov2"]

#: timm modules whose models are plain ViTs (patch tokens after ``num_prefix_tokens``).
_VIT_MODULES: frozenset[str] = frozenset({"vision_transformer", "deit"})

#: Default CNN output stride: 7 x 7 tokens for a 112 px face.
DEFAULT_OUTPUT_STRIDE: int = 16

#: The course's own face backbone (``02``): its name, timm architecture and cut, and weights file.
COURSE_FACE: str = "course_face"
COURSE_FACE_ARCH: dict = {"timm_name": "resnet10t", "token_stride": 16, "image_size": 112}
COURSE_FACE_WEIGHTS: Path = Path(__file__).resolve().parents[1] / "weights" / "weights.safetensors"


def backbone_family(name: str) -> Family:
    """``"dinov2"``, ``"vit"`` or ``"cnn"`` for a timm model name (tag such as ``.lvd142m`` allowed)."""
    if name == COURSE_FACE:
        return "cnn"
    arch = timm.models.get_arch_name(name)
    try:
        module = timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
    except RuntimeError:
        raise ValueError(f"timm knows no model {name!r}: see timm.list_models()") from None
    if "dinov2" in arch:
        return "dinov2"
    return "vit" if module in _VIT_MODULES else "cnn"


def _patch_size(name: str, family: Family, timm_kwargs: dict) -> int:
    if "patch_size" in timm_kwargs:
        return int(timm_kwargs["patch_size"])
    if family == "dinov2":
        return 14
    found = re.search(r"patch(\d+)", name)
    return int(found.group(1)) if found else 16


def _has_pretrained_source(model: nn.Module) -> bool:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return bool(cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file"))


class Backbone(nn.Module):
    """A timm model that maps images (B, 3, H, W) in [0, 1] to ``{"tokens", "pooled"}``.

    Attributes: ``name``, ``family`` (``"cnn"``, ``"vit"``, ``"dinov2"``), ``image_size``,
    ``grid_size`` (h, w) of the tokens, ``num_features`` (C), ``pretrained_loaded``,
    ``frozen``. Build it with :func:`create_backbone`.
    """

    def __init__(self, model: nn.Module, *, name: str, family: Family, image_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], pretrained_loaded: bool,
                 token_index: int | None = None) -> None:
        super().__init__()
        self.model = model
        #: For a CNN cut at an intermediate stage (``token_stride``): timm's feature index.
        self.token_index = token_index
        self.name = name
        self.family: Family = family
        self.image_size = int(image_size)
        self.pretrained_loaded = bool(pretrained_loaded)
        self.num_features: int = int(model.num_features if token_index is None
                                     else model.feature_info[token_index]["num_chs"])
        self.num_prefix_tokens: int = int(getattr(model, "num_prefix_tokens", 0)) if family != "cnn" else 0
        # Not persistent: they come from the model's config, not from training.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.frozen = False
        self.grid_size: tuple[int, int] = self._probe_grid()

    @torch.no_grad()
    def _probe_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid, from one forward pass in eval mode (BN stats untouched)."""
        was_training = self.training
        self.eval()
        x = torch.zeros(1, 3, self.image_size, self.image_size, device=self.mean.device)
        feats = self._feature_map(x)
        self.train(was_training)
        if self.family == "cnn":
            if feats.ndim != 4:
                raise ValueError(f"{self.name}: forward_features gave {tuple(feats.shape)}, "
                                 "expected a (B, C, h, w) feature map")
            return int(feats.shape[-2]), int(feats.shape[-1])
        return tuple(int(g) for g in self.model.patch_embed.grid_size)  # type: ignore[return-value]

    @property
    def num_tokens(self) -> int:
        """N = h * w."""
        return self.grid_size[0] * self.grid_size[1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to ``image_size`` if needed, then apply the model's mean/std."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, 3, H, W)")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def _feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_index is None:
            return self.model.forward_features(x)
        return self.model.forward_intermediates(x, indices=[self.token_index], intermediates_only=True)[0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self._feature_map(self.normalize(images))
        if self.token_index is None:
            pooled = self.model.forward_head(feats, pre_logits=True)
        else:  # a truncated CNN has no head of its own: global average pooling
            pooled = feats.mean(dim=(2, 3))
        if self.family == "cnn":
            tokens = feats.flatten(2).transpose(1, 2)
        else:
            tokens = feats[:, self.num_prefix_tokens:]
        return {"tokens": tokens, "pooled": pooled}

    def freeze(self, frozen: bool = True) -> "Backbone":
        """Stop (or restart) training the weights; a frozen backbone also stays in eval mode."""
        self.frozen = frozen
        for p in self.model.parameters():
            p.requires_grad_(not frozen)
        self.model.train(self.training and not frozen)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if self.frozen:
            self.model.eval()  # BatchNorm statistics of a frozen model must not drift
        return self

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, family={self.family}, image_size={self.image_size}, "
                f"grid_size={self.grid_size}, num_features={self.num_features}, "
                f"pretrained_loaded={self.pretrained_loaded}")


def create_backbone(name: str, *, pretrained: bool = False, image_size: int = 112,
                    output_stride: int | None = None, token_stride: int | None = None,
                    **timm_kwargs) -> Backbone:
    """Build a timm backbone of one of three families and wrap it in :class:`Backbone`.

    ``name``: a timm name such as ``"resnet18"``, ``"resnet10t"``, ``"vit_tiny_patch16_224"``
    or ``"vit_small_patch14_dinov2.lvd142m"``. ``output_stride`` (CNNs only; default 16)
    dilates the last stages so that small faces keep a usable grid. ViTs and DINOv2 get
    ``img_size=image_size`` (rounded to a multiple of the patch size, with a one-line note).
    ``token_stride`` (CNNs) instead *cuts* the network after its last stage of that stride
    and drops the later stages: cheaper than dilating them, and it works for CNNs that cannot
    dilate (MobileNet, LCNet); the tokens then come from that stage. Other keyword arguments
    go to ``timm.create_model`` (e.g. ``patch_size=8`` for a ViT).

    ``pretrained=True`` loads timm's weights unless the course is offline or they cannot be
    had; then it prints one line and keeps the random initialisation. For ``"course_face"`` it
    loads the course's shipped weights file instead (see the module docstring).
    """
    if name == COURSE_FACE:
        return _course_face(pretrained=pretrained, image_size=image_size, output_stride=output_stride,
                            token_stride=token_stride, **timm_kwargs)
    family = backbone_family(name)
    kwargs = dict(timm_kwargs)
    kwargs.setdefault("num_classes", 0)
    if family == "cnn":
        if token_stride is not None and output_stride is not None:
            raise ValueError("give output_stride (dilate) or token_stride (cut), not both")
        if token_stride is None:
            kwargs["output_stride"] = DEFAULT_OUTPUT_STRIDE if output_stride is None else int(output_stride)
    elif token_stride is not None:
        raise ValueError(f"token_stride is for CNNs; {name} is a {family}")
    else:
        if output_stride is not None:
            raise ValueError(f"output_stride is for CNNs; {name} is a {family} (set image_size "
                             "or patch_size to change its grid)")
        patch = _patch_size(name, family, kwargs)
        rounded = max(patch, patch * round(image_size / patch))
        if rounded != image_size:
            print(f"image_size {image_size} is not a multiple of {name}'s patch size {patch}: "
                  f"using {rounded}")
            image_size = rounded
        kwargs["img_size"] = image_size

    def build(with_weights: bool) -> nn.Module:
        try:
            return timm.create_model(name, pretrained=with_weights, **kwargs)
        except TypeError as exc:
            if "output_stride" in str(exc):
                raise ValueError(f"{name} does not support output_stride: pass output_stride=32 "
                                 "or use a ResNet-like model") from None
            raise

    loaded = False
    model: nn.Module | None = None
    if pretrained:
        if is_offline():
            print(f"pretrained weights for {name} unavailable offline: using random initialisation")
        else:
            try:
                model = build(True)
                loaded = _has_pretrained_source(model)
                reason = "timm has none"
            except Exception as exc:  # network, missing file, hub errors: all mean "no weights"
                model, reason = None, type(exc).__name__
            if not loaded:
                print(f"pretrained weights for {name} unavailable ({reason}): "
                      "using random initialisation")
    if model is None:
        model = build(False)
    data_cfg = timm.data.resolve_model_data_config(model)
    token_index = None
    if token_stride is not None:
        stages = [i for i, f in enumerate(model.feature_info) if f["reduction"] == int(token_stride)]
        if not stages:
            strides = sorted({f["reduction"] for f in model.feature_info})
            raise ValueError(f"{name} has no stage of stride {token_stride}; its stages have strides {strides}")
        token_index = stages[-1]
        model.prune_intermediate_layers(indices=[token_index], prune_head=True)
    return Backbone(model, name=name, family=family, image_size=image_size, mean=tuple(data_cfg["mean"]),
                    std=tuple(data_cfg["std"]), pretrained_loaded=loaded, token_index=token_index)


def _course_face(*, pretrained: bool, image_size: int, output_stride: int | None, token_stride: int | None,
                 weights: Path | str | None = None, **timm_kwargs) -> Backbone:
    """The course face backbone, its shipped weights (or ``weights``) loaded when ``pretrained``."""
    arch = COURSE_FACE_ARCH
    if output_stride is not None or token_stride not in (None, arch["token_stride"]) or timm_kwargs:
        raise ValueError(f"{COURSE_FACE} is {arch['timm_name']} cut at stride {arch['token_stride']}: "
                         "it takes only image_size (and weights=)")
    path = Path(weights) if weights is not None else COURSE_FACE_WEIGHTS
    loaded = pretrained and path.exists()
    if pretrained and not loaded:
        print(f"{path} not found: {COURSE_FACE} uses random initialisation "
              "(python -m course_lib.pretrain --ship writes it)")
    overlay = {"pretrained_cfg_overlay": {"file": str(path)}} if loaded else {}
    model = timm.create_model(arch["timm_name"], pretrained=loaded, num_classes=0, **overlay)
    data_cfg = timm.data.resolve_model_data_config(model)
    index = [i for i, f in enumerate(model.feature_info) if f["reduction"] == arch["token_stride"]][-1]
    model.prune_intermediate_layers(indices=[index], prune_head=True)
    if loaded:  # timm loads a cut model's file non-strictly: check that it held every weight the cut model has

        with safe_open(str(path), framework="pt") as f:
            missing = sorted(set(model.state_dict()) - set(f.keys()))
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} weights of {COURSE_FACE} (first: {missing[0]}): "
                             "not a course_face weights file")
    return Backbone(model, name=COURSE_FACE, family="cnn", image_size=image_size, mean=tuple(data_cfg["mean"]),
                    std=tuple(data_cfg["std"]), pretrained_loaded=loaded, token_index=index)


def backbone_fingerprint(backbone: Backbone) -> str:
    """A 16-hex-digit key for caches of extracted features: same key, same tokens.

    It hashes the name, image size, token grid and mean/std, plus the raw bytes of every
    state_dict tensor (names, shapes, dtypes and values, BatchNorm statistics included).
    Hashing the bytes is exact and cheap enough (about 0.1 s for resnet18's 45 MB).
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{backbone.name}|{backbone.image_size}|{backbone.grid_size}|".encode())
    h.update(f"{backbone.mean.flatten().tolist()}|{backbone.std.flatten().tolist()}|".encode())
    for key, tensor in backbone.model.state_dict().items():
        t = tensor.detach()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            h.update(t.reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


__all__ = ["Backbone", "COURSE_FACE", "COURSE_FACE_ARCH", "COURSE_FACE_WEIGHTS", "DEFAULT_OUTPUT_STRIDE", "backbone_family", "backbone_fingerprint",
           "create_backbone"]
