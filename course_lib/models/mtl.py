"""The course's multi-task model: tokens (or images) -> AU, EXPR and VA, every part switchable.

Taught in ``02`` (baseline on frozen features), ``03`` (cross-attention), ``04`` (AU graph)
and ``05`` (training it all with :class:`course_lib.losses.MultiTaskLoss`).

Pipeline, after seed 002 with seed 000's cross-task attention as an option::

    images -> [Backbone] -> tokens (B, N, C)
    tokens -> TaskAdaptiveCrossAttention -> 12 AU | 8 EXPR | 2 VA query features
           -> AUGraph over the 12 AU nodes -> AUAssistedHeads -> [AU <-> EXPR attention]

Switches (:class:`MTLConfig`):

- ``cross_attention=False`` is the **baseline**: tokens are mean-pooled and projected
  linearly to ``dim``; each task reads that one vector (the heads are then plain linear
  layers). With ``gcn=True`` as well, the 12 AU node embeddings are made from the pooled
  vector by a Linear(dim, 12 * dim) + GELU (as ME-GraphAU's per-AU branches do) and the
  graph runs on them.
- ``gcn=False``: no graph; AU logits come straight from the AU queries, and EXPR / VA
  heads read only their own queries. ``au_assist=False`` keeps the graph for the AU logits but
  not for EXPR / VA (what seed 002's "AU-assisted" heads add, measured in ``04``).
- ``au_expr_attention=True``: the EXPR logits are refined by an attention between the tasks:
  ``au_expr_style="course"`` (the course's variant, :class:`AUToExprAttention`: the expression
  head attends over the AU nodes) or ``"published"`` (seed 000's module,
  :class:`AUQueryExprAttention`: the AU logits query the expression logits; train it after
  :func:`freeze_au_path`, as 000 did).

Outputs: ``{"au": (B, 12) logits, "expr": (B, 8) logits, "va": (B, 2) in [-1, 1]}``;
``return_attention=True`` adds ``"attention"`` (one (B, heads, 22, N) tensor per block, an
empty list for the baseline) and ``"features"``; ``return_features=True`` adds
``"features"`` only: ``{"au", "expr", "va"}`` each (B, dim) (the mean of that task's query
or node features, before dropout), plus ``"au_nodes"`` (B, 12, dim) and, with the graph,
``"graph"`` (B, dim). These feed the fusion and temporal models of later notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..data.label_stats import au_cooccurrence
from .au_gcn import N_AU, AUAssistedHeads, AUGraph, cooccurrence_adjacency
from .backbones import Backbone, create_backbone
from .cross_attention import (AU_SLICE, EXPR_SLICE, N_EXPR, N_VA, VA_SLICE, AUQueryExprAttention,
                              AUToExprAttention, TaskAdaptiveCrossAttention)

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class MTLConfig:
    """Everything that defines a :class:`MultiTaskModel`; each component can be switched off.

    ``token_dim``: C of the input tokens; required without a backbone, taken from the
    backbone otherwise. ``backbone``: a timm name for :func:`create_backbone`; the model
    then takes images (B, 3, H, W) in [0, 1] (``image_size``, ``pretrained``,
    ``freeze_backbone``, ``backbone_kwargs`` go to the backbone; a frozen backbone runs
    without gradients and stays in eval mode).
    """

    token_dim: int | None = None
    n_tokens: int | None = None
    dim: int = 128
    cross_attention: bool = True
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    token_reducer: Literal["linear", "conv1d"] = "linear"
    query_init: Literal["unit", "zeros"] = "unit"
    gcn: bool = True
    gcn_layers: int = 2
    learned_k: int | None = 4
    use_cooccurrence: bool = True
    cooccurrence_threshold: float = 0.4
    graph_combine: Literal["mean", "sum"] = "mean"
    graph_pool: Literal["mean", "attention"] = "mean"
    au_assist: bool = True
    au_expr_attention: bool = False
    au_expr_style: Literal["course", "published"] = "course"
    dropout: float = 0.1
    backbone: str | None = None
    image_size: int = 112
    pretrained: bool = False
    freeze_backbone: bool = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone is None and self.token_dim is None:
            raise ValueError("MTLConfig needs token_dim (the C of your tokens) or a backbone name")
        if self.gcn and self.learned_k is None and not self.use_cooccurrence:
            raise ValueError("gcn=True needs a graph: use_cooccurrence=True and/or learned_k")
        if self.au_expr_style not in ("course", "published"):
            raise ValueError(f"au_expr_style={self.au_expr_style!r}: use 'course' or 'published'")


class MultiTaskModel(nn.Module):
    """AU, EXPR and VA from patch tokens (or images), as configured by :class:`MTLConfig`.

    ``adjacency``: the normalised (12, 12) co-occurrence graph (see :func:`build_model`).
    When the config wants one and none is given, the identity (self-loops only) stands in;
    it is a buffer, so ``load_state_dict`` of a trained checkpoint restores the real one.
    """

    def __init__(self, config: MTLConfig, adjacency: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.backbone: Backbone | None = None
        token_dim = config.token_dim
        if config.backbone is not None:
            self.backbone = create_backbone(config.backbone, pretrained=config.pretrained,
                                            image_size=config.image_size, **config.backbone_kwargs)
            if config.freeze_backbone:
                self.backbone.freeze()
            if token_dim is not None and token_dim != self.backbone.num_features:
                raise ValueError(f"token_dim={token_dim} but {config.backbone} gives "
                                 f"{self.backbone.num_features}-dim tokens: leave token_dim unset")
            if config.n_tokens is not None and config.n_tokens != self.backbone.num_tokens:
                raise ValueError(f"n_tokens={config.n_tokens} but {config.backbone} gives "
                                 f"{self.backbone.num_tokens} tokens {self.backbone.grid_size}")
            token_dim = self.backbone.num_features
        assert token_dim is not None
        self.token_dim = token_dim

        self.encoder: TaskAdaptiveCrossAttention | None = None
        self.project: nn.Linear | None = None
        self.au_nodes: nn.Module | None = None
        if config.cross_attention:
            self.encoder = TaskAdaptiveCrossAttention(
                token_dim, dim, config.depth, config.heads, config.n_tokens,
                token_reducer=config.token_reducer, mlp_ratio=config.mlp_ratio, dropout=config.dropout,
                query_init=config.query_init)
        else:
            self.project = nn.Linear(token_dim, dim)
            if config.gcn:
                self.au_nodes = nn.Sequential(nn.Linear(dim, N_AU * dim), nn.GELU())

        self.graph: AUGraph | None = None
        if config.gcn:
            if adjacency is not None and not config.use_cooccurrence:
                raise ValueError("an adjacency was given but config.use_cooccurrence is False")
            fixed = None
            if config.use_cooccurrence:
                fixed = torch.eye(N_AU) if adjacency is None else torch.as_tensor(adjacency)
                if fixed.shape != (N_AU, N_AU):
                    raise ValueError(f"adjacency has shape {tuple(fixed.shape)}, expected (12, 12)")
            self.graph = AUGraph(dim, config.gcn_layers, fixed, config.learned_k,
                                 combine=config.graph_combine, dropout=config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.heads = AUAssistedHeads(dim, assist=config.gcn and config.au_assist, pool=config.graph_pool)
        self.au_to_expr: nn.Module | None = None
        if config.au_expr_attention:
            self.au_to_expr = (AUQueryExprAttention() if config.au_expr_style == "published"
                               else AUToExprAttention(dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, N, token_dim) tokens: ``x`` itself, or the backbone's tokens of images ``x``."""
        if self.backbone is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.frozen):
                x = self.backbone(x)["tokens"]
        if x.ndim != 3 or x.shape[-1] != self.token_dim:
            raise ValueError(f"tokens have shape {tuple(x.shape)}, expected (B, N, {self.token_dim})"
                             + ("" if self.backbone is None else " from the backbone"))
        return x

    def forward(self, x: torch.Tensor, return_attention: bool = False, return_features: bool = False
                ) -> dict[str, Any]:
        tokens = self.tokens(x)
        attentions: list[torch.Tensor] = []
        if self.encoder is not None:
            q, attentions = self.encoder(tokens)
            au, expr, va = q[:, AU_SLICE], q[:, EXPR_SLICE], q[:, VA_SLICE]
        else:
            assert self.project is not None
            f = self.project(tokens.mean(1))
            b, d = f.shape
            au = (self.au_nodes(f).view(b, N_AU, d) if self.au_nodes is not None
                  else f.unsqueeze(1).expand(b, N_AU, d))
            expr, va = f.unsqueeze(1).expand(b, N_EXPR, d), f.unsqueeze(1).expand(b, N_VA, d)
        if self.graph is not None:
            au = self.graph(au)
        out = self.heads(self.drop(au), self.drop(expr), self.drop(va))
        result: dict[str, Any] = {"au": out["au"], "expr": out["expr"], "va": out["va"]}
        if isinstance(self.au_to_expr, AUQueryExprAttention):
            result["expr"], alpha = self.au_to_expr(out["au"], out["expr"])
        elif self.au_to_expr is not None:
            result["expr"], alpha = self.au_to_expr(expr.mean(1), out["expr"], au, out["au"])
        if self.au_to_expr is not None:
            if return_attention:
                result["au_to_expr"] = alpha
        if return_attention:
            result["attention"] = attentions
        if return_attention or return_features:
            features = {"au": au.mean(1), "expr": expr.mean(1), "va": va.mean(1), "au_nodes": au}
            if "graph" in out:
                features["graph"] = out["graph"]
            result["features"] = features
        return result


#: Where the parameters that the AU logits depend on live in a :class:`MultiTaskModel`.
AU_PATH: tuple[str, ...] = ("backbone.", "encoder.", "project.", "au_nodes.", "graph.", "heads.au.")


def freeze_au_path(model: MultiTaskModel) -> list[str]:
    """Seed 000's order of training: once the AU prediction is trained, freeze everything it
    depends on (backbone, cross-attention or projection, AU nodes, graph, AU classifier), so that
    the expression side and the attention between the tasks learn on AU predictions that no
    longer move. Sets ``requires_grad=False`` on those parameters (``fit`` then leaves them out
    of the optimiser) and returns their names. Their dropout still runs in training mode, as in
    000's code."""
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(AU_PATH):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(config: MTLConfig, train_table: "pd.DataFrame | None" = None) -> MultiTaskModel:
    """A :class:`MultiTaskModel` whose co-occurrence graph comes from ``train_table``'s AU labels.

    The table is only needed when ``config.gcn`` and ``config.use_cooccurrence``; use the
    training split only, so validation labels never shape the model.
    """
    adjacency = None
    if config.gcn and config.use_cooccurrence:
        if train_table is None:
            raise ValueError("config.use_cooccurrence needs the training table (its AU labels "
                             "give the graph): build_model(config, train_table)")
        adjacency = cooccurrence_adjacency(au_cooccurrence(train_table), config.cooccurrence_threshold)
    return MultiTaskModel(config, adjacency)


__all__ = ["AU_PATH", "MTLConfig", "MultiTaskModel", "build_model", "count_parameters", "freeze_au_path"]
