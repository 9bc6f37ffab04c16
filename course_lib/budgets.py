"""What each mode spends: every size, epoch count and repeat count of the course, in one table.

Taught in ``00_welcome_and_setup``. Smoke mode runs every notebook on a laptop CPU in minutes and
full mode is sized for one GPU; ``COURSE_SCALE`` runs full mode's code paths at a share of its
sizes (:func:`course_lib.config.at_scale`, never below smoke's). Rows named after an idea are the
library's (the generated data, the backbone trained from scratch, the progressive recipe, the
explanation heads); rows named after a notebook are what that notebook spends, read at its top
with ``env.budget("03_cross_attention")``. A notebook's parameters (``EPOCHS = None`` ...) take
these values unless set, e.g. by papermill.
"""

from __future__ import annotations

from typing import Any

from .config import mode_settings

#: ``{row: {"smoke": settings, "full": settings}}``; read with :func:`budget`.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    # ---- the library
    "data": {  # the generated course data (course_lib.data.synth.ensure_course_data)
        "smoke": {"n_videos": 32, "frames_per_video": 45, "test_videos": 6},  # many identities: models must generalise
        "full": {"n_videos": 80, "frames_per_video": 300, "test_videos": 16},
    },
    "course_backbone": {  # trained from scratch on the course split (02's comparison): timm name, input, grid, training
        "smoke": {"name": "lcnet_050", "image_size": 112, "backbone_kwargs": {"token_stride": 16}, "epochs": 4,
                  "batch_size": 64, "lr": 3e-3},
        "full": {"name": "resnet18", "image_size": 112, "backbone_kwargs": {"output_stride": 16}, "epochs": 15,
                 "batch_size": 128, "lr": 1e-3},
    },
    "progressive": {  # course_lib.progressive.ProgressiveConfig: smoke fits a CPU in about a minute
        "smoke": {"dim": 32, "depth": 1, "stage1_epochs": 5, "stage2_epochs": 2, "stage3_epochs": 6,
                  "temporal_dim": 32, "windows": {"au": 1, "expr": 5, "va": 15}},
        "full": {"dim": 128, "depth": 2, "batch_size": 128, "stage1_epochs": 20, "stage1_lr": 1e-3,
                 "stage2_epochs": 8, "stage2_lr": 3e-4, "stage3_epochs": 20, "stage3_lr": 1e-3, "temporal_dim": 128},
    },
    "explain_heads": {  # cross-attention heads on the cached tokens, no AU graph: one query and map per AU
        "smoke": {"dim": 64, "depth": 1, "heads": 4, "epochs": 12, "lr": 3e-3, "batch_size": 32},
        "full": {"dim": 128, "depth": 2, "heads": 4, "epochs": 30, "lr": 1e-3, "batch_size": 128},
    },
    # ---- the notebooks
    "00_welcome_and_setup": {
        "smoke": {"matrix_size": 512, "matmuls": 10},
        "full": {"matrix_size": 4096, "matmuls": 50},
    },
    "01_data": {
        "smoke": {"demo_videos": 4, "loader_batches": 6},
        "full": {"demo_videos": 16, "loader_batches": 40},
    },
    "02_backbones_and_features": {
        "smoke": {"live_steps": 8, "scratch_backbone": {"epochs": 2},  # half the from-scratch recipe, to save time
                  "probe_epochs": 6, "timing_batch": 32, "timing_repeats": 2},
        "full": {"live_steps": 200, "scratch_backbone": {}, "probe_epochs": 40, "timing_batch": 64,
                 "timing_repeats": 20},
    },
    "03_cross_attention": {
        "smoke": {"epochs": 10, "dim": 64, "depth": 1, "lr": 3e-3, "batch_size": 32},
        "full": {"epochs": 30, "dim": 128, "depth": 2, "lr": 1e-3, "batch_size": 128},
    },
    "04_au_graph": {
        "smoke": {"dim": 32, "depth": 1, "epochs": 6, "seeds": 2, "phase2_epochs": 3, "lr": 3e-3, "batch_size": 64,
                  "paired_resamples": 200},
        "full": {"dim": 128, "depth": 2, "epochs": 30, "seeds": 3, "phase2_epochs": 10, "lr": 1e-3,
                 "batch_size": 128, "paired_resamples": 1000},
    },
    "05_progressive_training": {
        "smoke": {"timing_batch": 16, "timing_steps": 3, "demo_epochs": 4},
        "full": {"timing_batch": 128, "timing_steps": 20, "demo_epochs": 6},
    },
    "06_temporal_modeling": {
        "smoke": {"dim": 32, "window": 15, "sweep": (1, 5, 15, 30), "steps": 200, "batch_frames": 64, "lr": 3e-3},
        "full": {"dim": 128, "window": 30, "sweep": (1, 5, 15, 30), "steps": 1500, "batch_frames": 512, "lr": 1e-3},
    },
    "07_multimodal_audio": {
        "smoke": {"epochs": 5, "seeds": 2, "dim": 64, "audio_channels": 8, "lr": 3e-3, "batch_size": 64,
                  "paired_resamples": 200},
        "full": {"epochs": 25, "seeds": 3, "dim": 128, "audio_channels": 16, "lr": 1e-3, "batch_size": 128,
                 "paired_resamples": 1000},
    },
    "08_evaluation": {
        # smoke: changes to the "progressive" row, to save time
        "smoke": {"progressive": {"stage1_epochs": 2, "stage2_epochs": 1, "stage3_epochs": 2},
                  "seeds": 1, "table_rows": 5, "worst_frames": 8},
        "full": {"progressive": {}, "seeds": 3, "table_rows": 10, "worst_frames": 16},
    },
    "09_explanations": {
        "smoke": {"frames": 8, "ig_steps": 8, "occlusion": {"window": 16, "stride": 16}},  # occlusion in pixels
        "full": {"frames": 200, "ig_steps": 32, "occlusion": {"window": 8, "stride": 8}},
    },
}


def budget(name: str, mode: str) -> dict[str, Any]:
    """The settings of row ``name`` of :data:`BUDGETS` in ``mode`` (full mode at ``COURSE_SCALE``)."""
    if name not in BUDGETS:
        raise KeyError(f"no budget named {name!r}; known: {', '.join(BUDGETS)}")
    return dict(mode_settings(BUDGETS[name], mode))


def budget_table(names: list[str] | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Every setting of ``names`` (default: all rows) in smoke and full mode, one line each (shown in ``00``)."""
    # lazy: pandas only for this table: `import course_lib` (every first cell) stays light
    import pandas as pd

    rows = [{"row": name, "setting": key, "smoke": repr(BUDGETS[name]["smoke"].get(key, "-")),
             "full": repr(BUDGETS[name]["full"].get(key, "-"))}
            for name in (names or list(BUDGETS))
            for key in dict.fromkeys([*BUDGETS[name]["smoke"], *BUDGETS[name]["full"]])]
    return pd.DataFrame(rows).set_index(["row", "setting"])


__all__ = ["BUDGETS", "budget", "budget_table"]
