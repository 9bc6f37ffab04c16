"""Models of the course: backbones (``02``), task-adaptive cross-attention (``03``), the AU
graph (``04``), the switchable multi-task model that combines them (``02``-``05``) and the
temporal encoders over windows of frames (``06``, stage 3 of ``05``).

Start with ``build_model(MTLConfig(token_dim=...), train_table)``; every part can be
switched off in :class:`MTLConfig` (all off is the baseline).
"""

from __future__ import annotations

from .au_gcn import (AUAssistedHeads, AUGraph, GCNLayer, LearnedTopKGraph, cooccurrence_adjacency,
                     normalize_adjacency)
from .backbones import Backbone, backbone_family, backbone_fingerprint, create_backbone
from .cross_attention import (AU_SLICE, EXPR_SLICE, N_QUERIES, QUERY_NAMES, VA_SLICE,
                              AUQueryExprAttention, AUToExprAttention, TaskAdaptiveBlock,
                              TaskAdaptiveCrossAttention, TaskQueries, attention, attention_maps)
from .mtl import AU_PATH, MTLConfig, MultiTaskModel, build_model, count_parameters, freeze_au_path
from .temporal import (WINDOWS, FeatureWindowDataset, TemporalEncoder, TemporalModel, per_task_predictions,
                       stitch_windows, tcn_receptive_field)

__all__ = [
    "AUAssistedHeads", "AUGraph", "AUQueryExprAttention", "AUToExprAttention", "AU_PATH", "AU_SLICE",
    "Backbone", "EXPR_SLICE",
    "GCNLayer", "LearnedTopKGraph", "MTLConfig", "MultiTaskModel", "N_QUERIES", "QUERY_NAMES",
    "TaskAdaptiveBlock", "TaskAdaptiveCrossAttention", "TaskQueries", "VA_SLICE", "attention",
    "attention_maps", "backbone_family", "backbone_fingerprint", "build_model",
    "count_parameters", "cooccurrence_adjacency", "freeze_au_path", "create_backbone", "normalize_adjacency",
    "FeatureWindowDataset", "TemporalEncoder", "TemporalModel", "WINDOWS", "per_task_predictions",
    "stitch_windows", "tcn_receptive_field",
]
