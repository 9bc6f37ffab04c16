"""Task-adaptive cross-attention: 22 learnable queries read the patch tokens (seed 002).

Taught in ``03``. One query per output: 12 AU queries, 8 expression queries and 2 VA
queries (valence, arousal). Each :class:`TaskAdaptiveBlock` lets the queries talk to each
other (self-attention), then read the image (cross-attention from queries to tokens), then
think alone (FFN), all pre-norm with residuals. The cross-attention weights are returned,
so a notebook can show where the "AU12" query looks (:func:`attention_maps`).

Attention is written out, ``softmax(Q K^T / sqrt(d)) V`` (:func:`attention`), instead of
calling ``F.scaled_dot_product_attention``, because the fused kernel does not return the
weights; the tests check that both give the same result.

:class:`AUQueryExprAttention` is seed 000's cross-attentive module as published: the 12 AU
predictions query the 8 expression logits, and the attention weights rescale those logits.
:class:`AUToExprAttention` is the course's own variant of the idea (``04`` compares them): the
expression head attends over the 12 AU embeddings and adds what it read to its logits.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..labels import AU_NAMES, EXPR_NAMES

N_AU: int = len(AU_NAMES)
N_EXPR: int = len(EXPR_NAMES)
N_VA: int = 2
#: Number of task queries: 12 AU + 8 EXPR + 2 VA.
N_QUERIES: int = N_AU + N_EXPR + N_VA
#: Where each task's queries sit among the 22.
AU_SLICE: slice = slice(0, N_AU)
EXPR_SLICE: slice = slice(N_AU, N_AU + N_EXPR)
VA_SLICE: slice = slice(N_AU + N_EXPR, N_QUERIES)
#: A readable name per query, for plots.
QUERY_NAMES: tuple[str, ...] = (*AU_NAMES, *EXPR_NAMES, "valence", "arousal")
#: The task of each query, for plots: ``"au"``, ``"expr"`` or ``"va"``.
QUERY_TASKS: tuple[str, ...] = ("au",) * N_AU + ("expr",) * N_EXPR + ("va",) * N_VA


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0,
              training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention that also returns its weights.

    ``q`` (..., Lq, d), ``k`` (..., Lk, d), ``v`` (..., Lk, dv) -> ``(out (..., Lq, dv),
    weights (..., Lq, Lk))``. Each row of ``weights`` sums to 1; they are returned before
    dropout (dropout, if any, only affects ``out``).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = scores.softmax(dim=-1)
    used = F.dropout(weights, dropout, training) if dropout and training else weights
    return used @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention from ``x`` (B, Lq, dim) to ``context`` (B, Lk, dim), weights returned."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, heads, n, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        context = x if context is None else context
        k, v = self.kv(context).chunk(2, dim=-1)
        out, weights = attention(self._split(self.q(x)), self._split(k), self._split(v),
                                 self.dropout, self.training)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.proj(out), weights  # weights: (B, heads, Lq, Lk)


class TaskQueries(nn.Module):
    """The 22 learnable query embeddings (AU_SLICE, EXPR_SLICE, VA_SLICE), one per output.

    ``init_std=0`` starts them at zero (seed 002's choice; see :class:`TaskAdaptiveCrossAttention`).
    """

    def __init__(self, dim: int, n_queries: int = N_QUERIES, init_std: float = 1.0) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(n_queries, dim))
        # Unit scale (as DETR's object queries): with the usual 0.02 the 22 queries start as
        # near-copies, and after the first self-attention they all attend to the same cells
        # (03_cross_attention shows this trap).
        if init_std > 0:
            nn.init.normal_(self.embedding, std=init_std)
        else:
            nn.init.zeros_(self.embedding)

    def forward(self, batch_size: int) -> torch.Tensor:
        """(batch_size, 22, dim): the same queries for every sample."""
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)


class TaskAdaptiveBlock(nn.Module):
    """Queries: self-attention, cross-attention to the tokens, FFN (pre-norm, residuals).

    ``self_attention=False`` leaves the first step out (seed 002's first block).
    ``forward(queries (B, Q, dim), tokens (B, N, dim)) -> (queries, cross_weights (B, heads, Q, N))``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 self_attention: bool = True) -> None:
        super().__init__()
        self.norm_self: nn.LayerNorm | None = None
        self.self_attn: MultiHeadAttention | None = None
        if self_attention:
            self.norm_self, self.self_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, heads, dropout)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.self_attn is not None and self.norm_self is not None:
            queries = queries + self.drop(self.self_attn(self.norm_self(queries))[0])
        out, weights = self.cross_attn(self.norm_cross(queries), self.norm_tokens(tokens))
        queries = queries + self.drop(out)
        queries = queries + self.drop(self.ffn(self.norm_ffn(queries)))
        return queries, weights


class TaskAdaptiveCrossAttention(nn.Module):
    """Project the tokens, then ``depth`` :class:`TaskAdaptiveBlock` s over 22 task queries.

    ``token_reducer``: ``"linear"`` (a per-token Linear, token_dim -> dim) or ``"conv1d"``
    (seed 002 reduces DINOv2 tokens "by a 1-D convolution"; here a Conv1d with kernel 3 over
    the token sequence in raster order, channels token_dim -> dim, so N is kept and each
    token also mixes its row neighbours; the paper's exact kernel is not published).
    ``n_tokens``: when given, a learnable positional embedding (n_tokens, dim) is added and
    inputs must have exactly that many tokens. Frozen ViT tokens already carry position.

    ``query_init``: how the 22 queries start. ``"unit"`` (the course's default) draws them from
    N(0, 1), as DETR does, so that they differ before the first self-attention mixes them
    (``03`` shows the trap of drawing them small). ``"zeros"`` is seed 002's answer: the queries
    start at zero and the **first block has no self-attention** (22 identical queries would only
    exchange identical messages); they become different because each feeds its own output head.

    ``forward(tokens (B, N, token_dim)) -> (queries (B, 22, dim), attentions)``, where
    ``attentions`` holds one (B, heads, 22, N) cross-attention tensor per block.
    """

    def __init__(self, token_dim: int, dim: int, depth: int, heads: int, n_tokens: int | None = None,
                 *, token_reducer: Literal["linear", "conv1d"] = "linear", mlp_ratio: float = 4.0,
                 dropout: float = 0.0, n_queries: int = N_QUERIES,
                 query_init: Literal["unit", "zeros"] = "unit") -> None:
        super().__init__()
        if query_init not in ("unit", "zeros"):
            raise ValueError(f"query_init {query_init!r}: use 'unit' or 'zeros'")
        self.query_init = query_init
        if token_reducer == "linear":
            self.reducer: nn.Module = nn.Linear(token_dim, dim)
        elif token_reducer == "conv1d":
            self.reducer = nn.Conv1d(token_dim, dim, kernel_size=3, padding=1)
        else:
            raise ValueError(f"token_reducer {token_reducer!r}: use 'linear' or 'conv1d'")
        self.token_reducer = token_reducer
        self.n_tokens = n_tokens
        if n_tokens is not None:
            self.pos_embed = nn.Parameter(torch.empty(1, n_tokens, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_parameter("pos_embed", None)
        self.queries = TaskQueries(dim, n_queries, init_std=1.0 if query_init == "unit" else 0.0)
        self.blocks = nn.ModuleList(
            TaskAdaptiveBlock(dim, heads, mlp_ratio, dropout, self_attention=not (i == 0 and query_init == "zeros"))
            for i in range(depth))
        self.norm = nn.LayerNorm(dim)

    def reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, token_dim) -> (B, N, dim), plus the positional embedding if any."""
        if tokens.ndim != 3:
            raise ValueError(f"tokens have shape {tuple(tokens.shape)}, expected (B, N, token_dim)")
        if self.token_reducer == "conv1d":
            x = self.reducer(tokens.transpose(1, 2)).transpose(1, 2)
        else:
            x = self.reducer(tokens)
        if self.pos_embed is not None:
            if x.shape[1] != self.n_tokens:
                raise ValueError(f"got {x.shape[1]} tokens but the positional embedding is for "
                                 f"{self.n_tokens} (n_tokens)")
            x = x + self.pos_embed
        return x

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.reduce(tokens)
        q = self.queries(x.shape[0])
        attentions = []
        for block in self.blocks:
            q, weights = block(q, x)
            attentions.append(weights)
        return self.norm(q), attentions


def attention_maps(attentions: list[torch.Tensor], grid: tuple[int, int],
                   which: Literal["last", "mean"] = "last") -> torch.Tensor:
    """Cross-attention as images: (B, 22, h, w), averaged over heads.

    ``which="last"`` uses the last block, ``"mean"`` averages all blocks. Each map sums to 1.
    """
    if not attentions:
        raise ValueError("no attention weights (is cross_attention switched off?)")
    if which not in ("last", "mean"):
        raise ValueError(f"which={which!r}: use 'last' or 'mean'")
    stacked = attentions[-1] if which == "last" else torch.stack(list(attentions)).mean(0)
    b, _, q, n = stacked.shape
    h, w = grid
    if h * w != n:
        raise ValueError(f"grid {grid} has {h * w} cells but the attention covers {n} tokens")
    return stacked.mean(1).reshape(b, q, h, w)


class AUQueryExprAttention(nn.Module):
    """Seed 000's cross-attentive module as published (``AdditiveAttention`` in ``AMEFARG`` of the
    authors' MTL-ABAW4 code): the AU predictions query the expression logits.

    Additive (Bahdanau) attention with the AU side as the query and each expression logit as
    a one-number key and its own value:

    - query ``q = W_q a`` from the 12 AU predictions ``a`` (B, 12), ``hidden`` wide,
    - key of class j ``k_j = W_k e_j`` from its logit ``e_j`` alone (``W_k``: 1 -> ``hidden``),
    - score ``s_j = w^T tanh(q + k_j)``, weights ``alpha = softmax_j(s)`` over the 8 classes,
    - output ``alpha_j * e_j``: each logit rescaled by its weight (no bias, no residual).

    In 000 the AU head is trained first and frozen before this module and the expression head
    are trained (:func:`course_lib.models.freeze_au_path`). ``forward(au_logits (B, 12),
    expr_logits (B, 8)) -> (refined logits (B, 8), alpha (B, 8))``.
    """

    def __init__(self, hidden: int = 64, n_au: int = N_AU, n_expr: int = N_EXPR) -> None:
        super().__init__()
        self.n_expr = n_expr
        self.query = nn.Linear(n_au, hidden, bias=False)
        self.key = nn.Linear(1, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, au_logits: torch.Tensor, expr_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if expr_logits.shape[-1] != self.n_expr or au_logits.shape[:-1] != expr_logits.shape[:-1]:
            raise ValueError(f"expected au_logits (B, {self.query.in_features}) and expr_logits (B, {self.n_expr}), "
                             f"got {tuple(au_logits.shape)} and {tuple(expr_logits.shape)}")
        q = self.query(au_logits).unsqueeze(1)                         # (B, 1, hidden)
        k = self.key(expr_logits.unsqueeze(-1))                        # (B, 8, hidden)
        alpha = self.score(torch.tanh(q + k)).squeeze(-1).softmax(-1)  # (B, 8)
        return alpha * expr_logits, alpha


class AUToExprAttention(nn.Module):
    """The course's variant of seed 000's cross-task step (not the published module, which is
    :class:`AUQueryExprAttention`): the expression head attends over the AU embeddings.

    Additive (Bahdanau) attention, with the expression side as the query:

    - query ``q = W_q [expr_feat ; softmax(expr_logits)]`` (what the expression head believes),
    - per AU i, a gated embedding ``m_i = sigmoid(au_logit_i) * au_node_i`` (an absent AU
      contributes little), key ``k_i = W_k m_i``, value ``v_i = W_v m_i``,
    - score ``e_i = w^T tanh(q + k_i)``, weights ``alpha = softmax_i(e)`` over the 12 AUs,
    - ``expr_logits + W_o sum_i alpha_i v_i``.

    ``W_o`` starts at zero, so switching the module on does not change a trained model's
    predictions until it learns something useful. ``forward`` returns
    ``(refined logits (B, 8), alpha (B, 12))``.
    """

    def __init__(self, dim: int, attn_dim: int | None = None, n_expr: int = N_EXPR) -> None:
        super().__init__()
        attn_dim = attn_dim or dim
        self.query = nn.Linear(dim + n_expr, attn_dim)
        self.key = nn.Linear(dim, attn_dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)
        self.out = nn.Linear(dim, n_expr)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, expr_feat: torch.Tensor, expr_logits: torch.Tensor, au_nodes: torch.Tensor,
                au_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``expr_feat`` (B, dim), ``expr_logits`` (B, 8), ``au_nodes`` (B, 12, dim), ``au_logits`` (B, 12)."""
        gated = torch.sigmoid(au_logits).unsqueeze(-1) * au_nodes
        q = self.query(torch.cat([expr_feat, expr_logits.softmax(-1)], dim=-1))
        scores = self.score(torch.tanh(q.unsqueeze(1) + self.key(gated))).squeeze(-1)
        alpha = scores.softmax(dim=-1)
        context = (alpha.unsqueeze(-1) * self.value(gated)).sum(1)
        return expr_logits + self.out(context), alpha


__all__ = ["AUQueryExprAttention", "AUToExprAttention", "AU_SLICE", "EXPR_SLICE", "MultiHeadAttention", "N_QUERIES",
           "QUERY_NAMES", "QUERY_TASKS", "TaskAdaptiveBlock", "TaskAdaptiveCrossAttention", "TaskQueries",
           "VA_SLICE", "attention", "attention_maps"]
