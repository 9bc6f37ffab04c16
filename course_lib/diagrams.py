"""Pictures of the course's ideas, drawn by code (matplotlib), for notebooks and slides.

Taught in ``00_welcome_and_setup``: :func:`pipeline_diagram` (the system the course builds)
and :func:`task_panels` (the three tasks for one frame, with the valence/arousal circle).
``03_cross_attention`` draws :func:`where_queries_should_look` (the 22 queries and the token
cells where each active AU's evidence lies), ``04_au_graph`` :func:`au_graph` (a graph over the 12
AUs), ``07_multimodal_audio`` :func:`sound_track` (one video's sound beside its labels) and
``09_explanations`` :func:`attribution_panel` (a map over its frame, the AU's region outlined).
"""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data.face import Identity, region_mask, render_face
from .labels import AU_DESCRIPTIONS, AU_NAMES, AU_REGION, EXPR_CIRCUMPLEX, EXPR_NAMES
from .localization import localization_ratio
from .models.cross_attention import QUERY_NAMES, QUERY_TASKS

#: One colour per task, used by every figure of the course.
TASK_COLORS = {"au": "#2a9d8f", "expr": "#e76f51", "va": "#457b9d", "shared": "#6c757d"}


def pipeline_diagram():
    """The data flow of the course as boxes and arrows, each box tagged with its notebook."""
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12.5, 4.6))
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    boxes = {
        "frames": (0.05, 2.0, "face frames\n(s-Aff-Wild2 layout)", "01", TASK_COLORS["shared"]),
        "backbone": (2.15, 2.0, "timm backbone\npatch tokens (cached)", "02", TASK_COLORS["shared"]),
        "xattn": (4.25, 2.0, "task-adaptive\ncross-attention\n12 AU + 8 EXPR + 2 VA queries", "03",
                  TASK_COLORS["shared"]),
        "gcn": (6.8, 2.0, "AU graph (GCN)\nover 12 AU nodes", "04", TASK_COLORS["au"]),
        "temporal": (6.8, 0.3, "temporal model\nwindows of frames", "06", TASK_COLORS["shared"]),
        "audio": (4.25, 0.3, "audio: log-Mel\n-> small CNN", "07", TASK_COLORS["shared"]),
        "au": (9.9, 2.95, "AU: 12 sigmoid\nF1 per AU", "", TASK_COLORS["au"]),
        "expr": (9.9, 1.7, "EXPR: 8-way softmax\nmacro F1", "", TASK_COLORS["expr"]),
        "va": (9.9, 0.45, "VA: 2 x tanh\nCCC", "", TASK_COLORS["va"]),
    }
    w, h = 1.75, 1.05
    centers = {}
    for key, (x, y, text, nb, color) in boxes.items():
        width = 2.05 if key == "xattn" else w
        patch = FancyBboxPatch((x, y), width, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                               facecolor=color, alpha=0.16, edgecolor=color, linewidth=2)
        ax.add_patch(patch)
        ax.text(x + width / 2, y + h / 2, text, ha="center", va="center", fontsize=9)
        if nb:
            ax.text(x + width - 0.05, y + h - 0.05, f"nb {nb}", ha="right", va="top", fontsize=7,
                    color=color, fontweight="bold")
        centers[key] = (x, y, width)

    def arrow(a: str, b: str, *, style: str = "-|>", color: str = "#333") -> None:
        xa, ya, wa = centers[a]
        xb, yb, wb = centers[b]
        start = (xa + wa, ya + h / 2) if xb > xa + wa - 0.01 else (xa + wa / 2, ya + h)
        end = (xb, yb + h / 2) if xb > xa + wa - 0.01 else (xb + wb / 2, yb)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color,
                                     linewidth=1.4, connectionstyle="arc3,rad=0.0"))

    for a, b in [("frames", "backbone"), ("backbone", "xattn"), ("xattn", "gcn"), ("gcn", "au"),
                 ("gcn", "expr"), ("gcn", "va"), ("xattn", "temporal"), ("temporal", "va"), ("temporal", "expr"),
                 ("audio", "temporal")]:
        arrow(a, b)
    ax.text(6.25, 4.4, "progressive training (nb 05): one task at a time -> jointly with feature "
            "fusion -> + temporal model", ha="center", fontsize=9, style="italic")
    ax.text(12.45, 0.02, "evaluation with uncertainty (nb 08) · Captum explanations (nb 09)",
            ha="right", fontsize=8, color="#555")
    fig.tight_layout()
    return fig


def task_panels(au: np.ndarray | None = None, expr_probs: np.ndarray | None = None,
                va: tuple[float, float] | None = None):
    """The three tasks for one frame: 12 AU decisions, 8 expression scores, a point in VA space.

    Without arguments it shows an example frame of a smiling face (AU6 + AU12 + AU25).
    """
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt

    if au is None:
        au = np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    if expr_probs is None:
        expr_probs = np.array([0.08, 0.01, 0.01, 0.01, 0.78, 0.02, 0.05, 0.04])
    if va is None:
        va = (0.62, 0.35)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1.25, 1.1, 1]})

    ax = axes[0]
    colors = [TASK_COLORS["au"] if a else "#d9d9d9" for a in au]
    labels = [f"{n} {AU_DESCRIPTIONS[n]}" for n in AU_NAMES]
    ax.barh(range(12), np.ones(12), color=colors)
    ax.set_yticks(range(12), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_title("AU detection: 12 yes/no decisions\nmetric: F1 per AU, averaged", fontsize=10)
    for i, a in enumerate(au):
        ax.text(0.5, i, "present" if a else "absent", ha="center", va="center", fontsize=8,
                color="white" if a else "#555")

    ax = axes[1]
    best = int(np.argmax(expr_probs))
    ax.bar(range(8), expr_probs, color=[TASK_COLORS["expr"] if i == best else "#f4c7b8"
                                        for i in range(8)])
    ax.set_xticks(range(8), EXPR_NAMES, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title("Expression: one of 8 classes\nmetric: macro F1 over the 8", fontsize=10)

    ax = axes[2]
    circle = plt.Circle((0, 0), 1, fill=False, color="#999", linestyle="--")
    ax.add_patch(circle)
    ax.axhline(0, color="#ccc", linewidth=0.8)
    ax.axvline(0, color="#ccc", linewidth=0.8)
    for name, (v, a) in EXPR_CIRCUMPLEX.items():
        ax.plot(v, a, "o", color="#bbb", markersize=5)
        ax.annotate(name, (v, a), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#666")
    ax.plot(*va, "*", color=TASK_COLORS["va"], markersize=16, label="this frame")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_xlabel("valence (unpleasant -> pleasant)")
    ax.set_ylabel("arousal (calm -> excited)")
    ax.set_title("Valence / arousal: two numbers in [-1, 1]\nmetric: CCC, averaged", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def where_queries_should_look(image: np.ndarray, masks: np.ndarray, coverage: np.ndarray, active: list[int],
                              title: str, min_share: float = 0.25):
    """One frame under its token grid, the 22 queries beside it, and for each AU in ``active`` its
    region (outline) with arrows from its query to the cells the region covers (``03``, section 1).

    ``masks`` are the 12 AU regions (12, H, W) and ``coverage`` their share of each token cell
    (12, h, w); a cell counts when the region covers at least ``min_share`` of it.
    """
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle


    size, grid = masks.shape[-1], coverage.shape[-1]  # the image is drawn at the masks' size
    cell = size / grid
    palette = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 6.2))
    ax.imshow(image, extent=(0, size, size, 0))
    for i in range(grid + 1):  # the token grid
        ax.plot([0, size], [i * cell, i * cell], color="white", lw=0.5, alpha=0.6)
        ax.plot([i * cell, i * cell], [0, size], color="white", lw=0.5, alpha=0.6)
    query_y, x_query = np.linspace(-4, size + 4, 22), size + 60
    for j, (name, kind) in enumerate(zip(QUERY_NAMES, QUERY_TASKS)):
        ax.text(x_query, query_y[j], name, fontsize=7, va="center", ha="left", color="white",
                bbox=dict(boxstyle="round,pad=0.2", fc=TASK_COLORS[kind], ec="none"))
    for n, a in enumerate(active):
        color = palette(n)
        if masks[a].any():
            ax.contour(masks[a], levels=[0.5], colors=[color], linewidths=1.5)
        for r, c in zip(*np.nonzero(coverage[a] >= min_share)):
            ax.add_patch(Rectangle((c * cell, r * cell), cell, cell, fc=color, alpha=0.35, ec=color, lw=1.5))
            ax.annotate("", xy=((c + 0.5) * cell, (r + 0.5) * cell), xytext=(x_query - 1, query_y[a]),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=0.9, alpha=0.8))
    ax.set_xlim(-2, x_query + 30)
    ax.set_ylim(size + 8, -8)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    return fig


#: The face region each AU moves (``labels.AU_REGION``), coloured in the AU graphs of ``04``.
REGION_COLORS = {"brows": "#457b9d", "cheeks/eyes": "#e9c46a", "eyes": "#f4a261", "mouth": "#e76f51", "jaw": "#9d4edd"}


def au_graph(weights: np.ndarray, node_rate: np.ndarray, ax=None, title: str = "", top_k: int | None = None,
             color: str = "#264653", legend: bool = False):
    """The 12 AUs on a circle, an arrow i -> j for each non-zero ``weights[i, j]`` (i != j), thicker when
    heavier (``04_au_graph``). ``node_rate`` sizes the nodes (e.g. each AU's base rate), ``top_k`` keeps
    the k heaviest arrows leaving each node, ``legend`` adds the colours of the face regions."""
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    w = np.nan_to_num(np.asarray(weights, dtype=float)).copy()
    np.fill_diagonal(w, 0.0)
    if top_k is not None:
        w[w < np.sort(w, axis=1)[:, [-top_k]]] = 0.0
    ax = ax or plt.gca()
    angle = np.pi / 2 - 2 * np.pi * np.arange(12) / 12
    pos = np.c_[np.cos(angle), np.sin(angle)]
    sizes = 250 + 2250 * np.asarray(node_rate) / np.max(node_rate)  # marker area in points^2
    w_min, w_max = (w[w > 0].min() if (w > 0).any() else 0.0), w.max()
    for i, j in zip(*np.nonzero(w)):
        s = 0.15 + 0.85 * (w[i, j] - w_min) / (w_max - w_min) if w_max > w_min else 1.0  # lightest to heaviest
        ax.add_patch(FancyArrowPatch(
            pos[i], pos[j], arrowstyle="-|>", mutation_scale=7 + 9 * s, linewidth=0.4 + 3.2 * s, color=color,
            alpha=0.2 + 0.7 * s, connectionstyle="arc3,rad=0.15", shrinkA=np.sqrt(sizes[i]) / 2,
            shrinkB=np.sqrt(sizes[j]) / 2 + 1, zorder=1))
    ax.scatter(pos[:, 0], pos[:, 1], s=sizes, c=[REGION_COLORS[AU_REGION[a]] for a in AU_NAMES],
               edgecolors="white", linewidths=1.5, zorder=2)
    for k, a in enumerate(AU_NAMES):
        ax.text(*pos[k], a[2:], ha="center", va="center", fontsize=9, weight="bold", color="white", zorder=3)
        ax.text(*(pos[k] * 1.3), f"{a}\n{AU_DESCRIPTIONS[a]}", ha="center", va="center", fontsize=7.5)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    if legend:
        handles = [Line2D([], [], marker="o", linestyle="", markersize=9, color=c, label=r)
                   for r, c in REGION_COLORS.items()]
        ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, title="moves the", title_fontsize=8)
    return ax


def sound_track(wave: np.ndarray, rate: int, logmel: np.ndarray, hop_s: float, fps: float, talking: np.ndarray,
                arousal: np.ndarray, valence: np.ndarray, loudness: np.ndarray, window_s: float, title: str):
    """One video's sound (``07_multimodal_audio``): the waveform's envelope with the talking frames
    shaded, its log-Mel spectrogram, and the annotated arousal and valence beside the loudness of
    the ``window_s`` seconds around each frame. Returns the plotly figure."""
    hop = int(rate * hop_s)
    frames = wave[: wave.size // hop * hop].reshape(-1, hop)
    env_max, env_min = frames.max(1), frames.min(1)  # the waveform's envelope per hop
    t_env = (np.arange(env_max.size) + 0.5) * hop_s
    t_frames = (np.arange(len(talking)) + 0.5) / fps
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.25, 0.45, 0.3],
                        subplot_titles=("waveform (shaded: talking)", "log-Mel spectrogram (dB)",
                                        "annotated arousal and valence; loudness around each frame"),
                        specs=[[{}], [{}], [{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=t_env, y=env_max, line=dict(width=0.5, color="#264653"), showlegend=False),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=t_env, y=env_min, line=dict(width=0.5, color="#264653"), fill="tonexty",
                             showlegend=False), row=1, col=1)
    starts = np.flatnonzero(np.diff(np.r_[0, talking.astype(int)]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[talking.astype(int), 0]) == -1) + 1
    for a, b in zip(starts, ends):
        for r in (1, 3):
            fig.add_vrect(x0=a / fps, x1=b / fps, fillcolor="#e9c46a", opacity=0.3, line_width=0, row=r, col=1)
    fig.add_trace(go.Heatmap(z=logmel, x=np.arange(logmel.shape[1]) * hop_s, y=np.arange(logmel.shape[0]),
                             colorscale="Viridis", colorbar=dict(title="dB", len=0.4, y=0.5), zmin=-100, zmax=0),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=t_frames, y=arousal, name="arousal (label)", line=dict(color="#e63946", width=2)),
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=t_frames, y=valence, name="valence (label)", line=dict(color="#457b9d", width=2)),
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=t_frames, y=loudness, name=f"loudness of the {window_s:.2f} s around each frame "
                             "(dB, right)", line=dict(color="#8d99ae", dash="dot")), row=3, col=1, secondary_y=True)
    fig.update_yaxes(title_text="Mel band", row=2, col=1)
    fig.update_yaxes(title_text="label", range=[-1, 1], row=3, col=1)
    fig.update_xaxes(title_text="time (s)", row=3, col=1)
    fig.update_layout(height=720, title=title, legend=dict(orientation="h", y=-0.12))
    return fig


def outline_region(ax, region: np.ndarray, color: str = "cyan", width: float = 1.0) -> None:
    """Outline an AU region (a boolean mask) on a matplotlib axis; nothing for an empty region (``09``)."""
    if region.any():
        ax.contour(region, levels=[0.5], colors=color, linewidths=width)


def attribution_panel(ax, image, attribution, region: np.ndarray, title: str | None = None, ratio: bool = True) -> None:
    """A frame (3, H, W) with an attribution map over it and the AU region outlined (``09_explanations``);
    with ``ratio``, the map's localisation ratio below it (:func:`course_lib.localization.localization_ratio`)."""
    a = np.asarray(attribution, dtype=float)
    ax.imshow(np.asarray(image.permute(1, 2, 0)))
    ax.imshow(a, cmap="inferno", alpha=0.65, vmin=0, vmax=max(np.quantile(a, 0.99), 1e-12))
    outline_region(ax, region)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if ratio and a.max() > 0 and region.any():
        ax.set_xlabel(f"ratio {localization_ratio(a, region):.2f}", fontsize=8)


def figure_to_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes (for slides and HTML pages) and close it."""
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def au_atlas(identity=None, intensity: float = 1.0, image_size: int = 112):
    """The AU atlas (``01_data``): a neutral face, then each AU alone; below each, what changed
    (absolute difference to neutral) and the AU's ground-truth region outlined on the face."""
    # lazy: matplotlib takes about 1 s to import; the slides import this module for one figure
    import matplotlib.pyplot as plt

    identity = identity or Identity()
    neutral, _ = render_face(identity, np.zeros(12), image_size=image_size)
    base = np.asarray(neutral, dtype=np.float64)
    fig, axes = plt.subplots(3, 13, figsize=(19, 5.4))
    for col in range(13):
        active = np.zeros(12)
        if col:
            active[col - 1] = intensity
        face, regions = render_face(identity, active, image_size=image_size)
        arr = np.asarray(face)
        diff = np.abs(arr.astype(np.float64) - base).sum(axis=2)
        axes[0, col].imshow(arr)
        axes[1, col].imshow(diff, cmap="magma", vmin=0, vmax=max(60.0, diff.max()))
        axes[2, col].imshow(arr)
        if col:
            mask = region_mask(regions[col - 1], image_size)
            axes[2, col].contour(mask, levels=[0.5], colors=[TASK_COLORS["au"]], linewidths=1.5)
            name = AU_NAMES[col - 1]
            axes[0, col].set_title(f"{name}\n{AU_DESCRIPTIONS[name]}", fontsize=8)
        else:
            axes[0, col].set_title("neutral", fontsize=8)
        for row in range(3):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_ylabel("face", fontsize=9)
    axes[1, 0].set_ylabel("change", fontsize=9)
    axes[2, 0].set_ylabel("region", fontsize=9)
    fig.tight_layout()
    return fig
