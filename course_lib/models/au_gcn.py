"""A graph over the 12 AUs: which AUs go together, and how that helps EXPR and VA.

Taught in ``04``. Two ways to get the edges:

- :func:`cooccurrence_adjacency`: fixed, from the training labels' P(AU_j | AU_i)
  (``course_lib.data.label_stats.au_cooccurrence``), thresholded as in ML-GCN;
- :class:`LearnedTopKGraph`: per sample, each AU node links to the k nodes most similar to
  it (ME-GraphAU's ANFL, used by seed 000).

:class:`AUGraph` runs a small GCN (:class:`GCNLayer`) over the 12 AU node embeddings with
either graph or both; :class:`AUAssistedHeads` turns the nodes into AU logits and lets the
pooled graph "assist" the expression and VA heads (seed 002's AU-GCN).

Adjacency convention: ``A[i, j]`` is how much node i takes from node j (``H' = A H W``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..labels import AU_NAMES, EXPR_NAMES

N_AU: int = len(AU_NAMES)


def normalize_adjacency(adj: torch.Tensor, mode: Literal["row", "symmetric"] = "row") -> torch.Tensor:
    """``"row"``: D^-1 A (every row with an edge sums to 1, a mean over neighbours).
    ``"symmetric"``: D^-1/2 A D^-1/2 (Kipf & Welling; stays symmetric, largest eigenvalue 1).
    Works on (n, n) or (B, n, n); rows without edges stay zero."""
    deg = adj.sum(-1)
    inv = torch.where(deg > 0, deg, torch.ones_like(deg)).reciprocal() * (deg > 0)
    if mode == "row":
        return adj * inv.unsqueeze(-1)
    if mode == "symmetric":
        s = inv.sqrt()
        return s.unsqueeze(-1) * adj * s.unsqueeze(-2)
    raise ValueError(f"mode {mode!r}: use 'row' or 'symmetric'")


def cooccurrence_adjacency(cond: np.ndarray | pd.DataFrame | torch.Tensor, threshold: float = 0.4, *,
                           self_loops: bool = True, symmetric: bool = False, binary: bool = True,
                           normalize: bool = True) -> torch.Tensor:
    """A fixed AU graph (12, 12, float32) from ``cond[i, j] = P(AU_j | AU_i)``.

    ML-GCN style: an edge i -> j where ``P(j | i) >= threshold`` (the diagonal of ``cond`` is
    ignored; NaN rows, AUs never seen present, get no edges), weight 1 (``binary=True``) or
    the probability itself (``binary=False``). ``symmetric=True`` keeps an edge if either
    direction passes. ``self_loops`` adds the identity, so each node keeps its own features.

    ``normalize`` (default): row-normalised, every row sums to 1, when ``symmetric=False``;
    ``D^-1/2 A D^-1/2`` (symmetric, spectral radius 1) when ``symmetric=True``. With
    ``normalize=False`` the raw (0/1 or probability) matrix comes back, for plotting.
    """
    p = np.asarray(cond.to_numpy() if isinstance(cond, pd.DataFrame) else
                   cond.detach().cpu().numpy() if isinstance(cond, torch.Tensor) else cond,
                   dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"cond has shape {p.shape}, expected a square (12, 12) matrix")
    p = np.nan_to_num(p, nan=0.0)
    keep = p >= threshold
    adj = keep.astype(np.float64) if binary else np.where(keep, p, 0.0)
    np.fill_diagonal(adj, 0.0)
    if symmetric:
        adj = np.maximum(adj, adj.T)
    if self_loops:
        adj = adj + np.eye(len(adj))
    out = torch.as_tensor(adj, dtype=torch.float32)
    if normalize:
        out = normalize_adjacency(out, "symmetric" if symmetric else "row")
    return out


class LearnedTopKGraph(nn.Module):
    """Per-sample AU graph from node similarity, top-k neighbours (ME-GraphAU's ANFL).

    Nodes (B, n, dim) are projected, compared by cosine similarity, and each node keeps its
    ``k`` most similar other nodes plus itself: exactly ``k + 1`` non-zeros per row. Top-k
    picking has no gradient, so (unlike ANFL's 0/1 edges) the kept edges are weighted by a
    softmax of their similarities (``weighted=True``), which lets the projection learn;
    ``weighted=False`` gives 1 / (k + 1) per kept edge. Rows sum to 1 either way.
    """

    def __init__(self, dim: int, k: int = 4, *, weighted: bool = True, temperature: float = 1.0) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k={k}: keep at least one neighbour")
        self.k = k
        self.weighted = weighted
        self.temperature = temperature
        self.proj = nn.Linear(dim, dim) if weighted else None

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B, n, dim) -> adjacency (B, n, n)."""
        n = nodes.shape[-2]
        if self.k >= n:
            raise ValueError(f"k={self.k} neighbours but only {n} nodes")
        z = F.normalize(self.proj(nodes) if self.proj is not None else nodes, dim=-1)
        sim = z @ z.transpose(-2, -1)
        eye = torch.eye(n, dtype=torch.bool, device=nodes.device)
        idx = sim.masked_fill(eye, float("-inf")).topk(self.k, dim=-1).indices
        mask = torch.zeros_like(sim, dtype=torch.bool).scatter(-1, idx, True) | eye
        if self.weighted:
            return (sim / self.temperature).masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return mask.to(nodes.dtype) / (self.k + 1)

    def extra_repr(self) -> str:
        return f"k={self.k}, weighted={self.weighted}"


class GCNLayer(nn.Module):
    """``H' = LayerNorm(res(H) + act(A H W))``; ``A`` (n, n) or (B, n, n), already normalised."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.res = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res(h) + self.drop(self.act(adj @ self.linear(h))))


class AUGraph(nn.Module):
    """A GCN over the 12 AU node embeddings (B, 12, dim), on a fixed and/or learned graph.

    ``adjacency``: a normalised (12, 12) matrix such as :func:`cooccurrence_adjacency`'s,
    stored as a buffer (it travels in the state_dict). ``learned_k``: also build a
    :class:`LearnedTopKGraph` once per sample from the input nodes. With both, they are
    averaged (``combine="mean"``, rows still sum to 1 for row-normalised inputs) or added
    (``"sum"``). At least one graph is needed.
    """

    def __init__(self, dim: int, layers: int = 2, adjacency: torch.Tensor | None = None,
                 learned_k: int | None = None, *, combine: Literal["mean", "sum"] = "mean",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if adjacency is None and learned_k is None:
            raise ValueError("AUGraph needs an adjacency, a learned_k, or both")
        if combine not in ("mean", "sum"):
            raise ValueError(f"combine {combine!r}: use 'mean' or 'sum'")
        if adjacency is not None:
            adjacency = torch.as_tensor(adjacency, dtype=torch.float32)
            if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
                raise ValueError(f"adjacency has shape {tuple(adjacency.shape)}, expected (n, n)")
        self.register_buffer("adjacency", adjacency)
        self.learned = LearnedTopKGraph(dim, learned_k) if learned_k is not None else None
        self.combine = combine
        self.layers = nn.ModuleList(GCNLayer(dim, dim, dropout) for _ in range(layers))

    def graph(self, nodes: torch.Tensor) -> torch.Tensor:
        """The adjacency used for these nodes: (12, 12) fixed or (B, 12, 12) with a learned part."""
        if self.learned is None:
            return self.adjacency
        learned = self.learned(nodes)
        if self.adjacency is None:
            return learned
        both = learned + self.adjacency.to(learned.dtype)
        return both / 2 if self.combine == "mean" else both

    def forward(self, nodes: torch.Tensor, return_adjacency: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        adj = self.graph(nodes)
        h = nodes
        for layer in self.layers:
            h = layer(h, adj)
        return (h, adj) if return_adjacency else h


class PerQueryLinear(nn.Module):
    """One small linear map per query: (B, Q, in_dim) -> (B, Q), ``out[:, q] = x[:, q] . w_q + b_q``."""

    def __init__(self, n_queries: int, in_dim: int) -> None:
        super().__init__()
        bound = in_dim ** -0.5  # nn.Linear's default range
        self.weight = nn.Parameter(torch.empty(n_queries, in_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_queries).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(-1) + self.bias


class AUAssistedHeads(nn.Module):
    """Outputs from per-task query features, with the AU graph assisting EXPR and VA.

    ``forward(au_nodes (B, 12, dim), expr (B, 8, dim), va (B, 2, dim)) -> dict`` with
    ``"au"`` (B, 12) logits (one linear map per AU node), ``"expr"`` (B, 8) logits and
    ``"va"`` (B, 2) in [-1, 1] (tanh), each class / dimension read from its own query. With
    ``assist=True`` every EXPR and VA query is concatenated with the pooled graph
    ``g`` (B, dim), ``"graph"`` in the output: the mean over the nodes (``pool="mean"``) or a
    learned attention pooling (``pool="attention"``).
    """

    def __init__(self, dim: int, *, assist: bool = True, pool: Literal["mean", "attention"] = "mean",
                 n_au: int = N_AU, n_expr: int = len(EXPR_NAMES), n_va: int = 2) -> None:
        super().__init__()
        if pool not in ("mean", "attention"):
            raise ValueError(f"pool {pool!r}: use 'mean' or 'attention'")
        self.assist = assist
        self.pool = pool
        self.pool_score = nn.Linear(dim, 1) if assist and pool == "attention" else None
        in_dim = 2 * dim if assist else dim
        self.au = PerQueryLinear(n_au, dim)
        self.expr = PerQueryLinear(n_expr, in_dim)
        self.va = PerQueryLinear(n_va, in_dim)

    def pooled_graph(self, au_nodes: torch.Tensor) -> torch.Tensor:
        """(B, 12, dim) -> (B, dim)."""
        if self.pool_score is None:
            return au_nodes.mean(1)
        weights = self.pool_score(au_nodes).softmax(dim=1)
        return (weights * au_nodes).sum(1)

    def forward(self, au_nodes: torch.Tensor, expr: torch.Tensor, va: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"au": self.au(au_nodes)}
        if self.assist:
            g = self.pooled_graph(au_nodes)
            out["graph"] = g
            expr = torch.cat([expr, g.unsqueeze(1).expand(-1, expr.shape[1], -1)], dim=-1)
            va = torch.cat([va, g.unsqueeze(1).expand(-1, va.shape[1], -1)], dim=-1)
        out["expr"] = self.expr(expr)
        out["va"] = torch.tanh(self.va(va))
        return out


__all__ = ["AUAssistedHeads", "AUGraph", "GCNLayer", "LearnedTopKGraph", "PerQueryLinear",
           "cooccurrence_adjacency", "normalize_adjacency"]
