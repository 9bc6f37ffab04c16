"""course_lib.models: backbones, task-adaptive cross-attention, AU graph, the multi-task model.

Small sizes throughout, random weights only (``pretrained=False``; the offline fallback is
tested with the network blocked). The whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F

from course_lib.labels import AU_NAMES
from course_lib.losses import MultiTaskLoss
from course_lib.models import (AU_SLICE, EXPR_SLICE, N_QUERIES, QUERY_NAMES, VA_SLICE, AUAssistedHeads,
                               AUQueryExprAttention, freeze_au_path,
                               AUGraph, AUToExprAttention, GCNLayer, LearnedTopKGraph, MTLConfig,
                               MultiTaskModel, TaskAdaptiveBlock, TaskAdaptiveCrossAttention,
                               TaskQueries, attention, attention_maps, backbone_fingerprint,
                               backbones, build_model, cooccurrence_adjacency, count_parameters,
                               create_backbone)

B, N, C, DIM = 3, 16, 24, 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _batch(n: int = 16) -> dict[str, torch.Tensor]:
    return {"au": torch.randint(0, 2, (n, 12)).float(), "expr": torch.randint(0, 8, (n,)),
            "va": torch.rand(n, 2) * 2 - 1}


def _cond() -> np.ndarray:
    """A 12 x 12 P(j | i) with known entries above / below 0.4, and one NaN row."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (12, 12))
    np.fill_diagonal(p, 1.0)
    p[11] = np.nan  # an AU never present
    return p


# --------------------------------------------------------------------------- attention


def test_explicit_attention_equals_sdpa():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
    out, weights = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 3, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_query_slices_partition_the_22_queries():
    idx = list(range(N_QUERIES))
    assert N_QUERIES == 22 == len(QUERY_NAMES)
    assert idx[AU_SLICE] + idx[EXPR_SLICE] + idx[VA_SLICE] == idx
    assert [QUERY_NAMES[i] for i in idx[AU_SLICE]] == list(AU_NAMES)
    assert QUERY_NAMES[VA_SLICE] == ("valence", "arousal")
    assert TaskQueries(DIM)(4).shape == (4, 22, DIM)


def test_task_adaptive_block_shapes():
    block = TaskAdaptiveBlock(DIM, heads=4)
    q, w = block(torch.randn(B, 22, DIM), torch.randn(B, N, DIM))
    assert q.shape == (B, 22, DIM) and w.shape == (B, 4, 22, N)


@pytest.mark.parametrize("reducer", ["linear", "conv1d"])
@pytest.mark.parametrize("n_tokens", [None, N])
def test_cross_attention_shapes_and_rows_sum_to_one(reducer, n_tokens):
    module = TaskAdaptiveCrossAttention(C, DIM, depth=2, heads=2, n_tokens=n_tokens, token_reducer=reducer)
    q, attns = module(torch.randn(B, N, C))
    assert q.shape == (B, 22, DIM)
    assert len(attns) == 2 and all(a.shape == (B, 2, 22, N) for a in attns)
    for a in attns:
        torch.testing.assert_close(a.sum(-1), torch.ones(B, 2, 22))
    for which in ("last", "mean"):
        maps = attention_maps(attns, (4, 4), which)
        assert maps.shape == (B, 22, 4, 4)
        torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(B, 22))
    with pytest.raises(ValueError, match="grid"):
        attention_maps(attns, (3, 4))
    if n_tokens is not None:
        with pytest.raises(ValueError, match="n_tokens"):
            module(torch.randn(B, N + 1, C))


def test_au_to_expr_attention_starts_as_identity_and_weights_sum_to_one():
    module = AUToExprAttention(DIM)
    logits = torch.randn(B, 8)
    refined, alpha = module(torch.randn(B, DIM), logits, torch.randn(B, 12, DIM), torch.randn(B, 12))
    torch.testing.assert_close(refined, logits)  # zero-initialised output layer
    assert alpha.shape == (B, 12)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B))
    torch.nn.init.normal_(module.out.weight)
    refined, _ = module(torch.randn(B, DIM), logits, torch.randn(B, 12, DIM), torch.randn(B, 12))
    assert not torch.allclose(refined, logits)


def test_zero_queries_as_002_start_identical_skip_self_attention_in_block_one_and_learn_apart():
    torch.manual_seed(0)
    enc = TaskAdaptiveCrossAttention(C, DIM, depth=2, heads=2, query_init="zeros")
    assert torch.count_nonzero(enc.queries.embedding) == 0
    assert enc.blocks[0].self_attn is None and enc.blocks[0].norm_self is None
    assert enc.blocks[1].self_attn is not None  # only the first block goes without
    x = torch.randn(B, N, C)
    q, attns = enc(x)
    torch.testing.assert_close(q, q[:, :1].expand_as(q))  # 22 copies of one query at the start
    torch.testing.assert_close(attns[0], attns[0][:, :, :1].expand_as(attns[0]))
    model = MultiTaskModel(MTLConfig(token_dim=C, dim=DIM, depth=1, heads=2, gcn=False, dropout=0.0,
                                     query_init="zeros"))
    batch = _batch(8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        MultiTaskLoss()(model(torch.randn(8, N, C)), batch)[0].backward()
        opt.step()
    emb = model.encoder.queries.embedding.detach()
    assert torch.cdist(emb, emb)[~torch.eye(22, dtype=torch.bool)].min() > 0  # each head pulled its query apart
    default = TaskAdaptiveCrossAttention(C, DIM, depth=2, heads=2)
    assert default.blocks[0].self_attn is not None and default.queries.embedding.std() > 0.5
    with pytest.raises(ValueError, match="query_init"):
        TaskAdaptiveCrossAttention(C, DIM, depth=1, heads=2, query_init="small")


def test_au_assist_switch_keeps_the_graph_for_the_aus_only():
    torch.manual_seed(0)
    cfg = dict(token_dim=C, dim=DIM, depth=1, heads=2, dropout=0.0)
    assisted = MultiTaskModel(MTLConfig(**cfg), cooccurrence_adjacency(_cond()))
    alone = MultiTaskModel(MTLConfig(**cfg, au_assist=False), cooccurrence_adjacency(_cond()))
    assert assisted.heads.assist and not alone.heads.assist and alone.graph is not None
    alone.load_state_dict({k: v for k, v in assisted.state_dict().items()
                           if not k.startswith(("heads.expr", "heads.va"))}, strict=False)
    x = torch.randn(B, N, C)
    with torch.no_grad():
        torch.testing.assert_close(alone(x)["au"], assisted(x)["au"])  # the AU path is the same
        q = alone.encoder(x)[0]
        torch.testing.assert_close(alone(x)["expr"], alone.heads.expr(q[:, EXPR_SLICE]))  # EXPR reads its queries only
    assert alone.heads.expr.weight.shape[-1] == DIM < assisted.heads.expr.weight.shape[-1]


def test_published_attention_matches_000s_additive_attention_written_out_in_float64():
    """000's AdditiveAttention(key_size=1, query_size=12, num_hiddens=64) with q = au, k = v = ex."""
    torch.manual_seed(0)
    module = AUQueryExprAttention(hidden=16).double()
    au, ex = torch.randn(B, 12, dtype=torch.float64), torch.randn(B, 8, dtype=torch.float64)
    refined, alpha = module(au, ex)
    wq, wk, wv = module.query.weight, module.key.weight, module.score.weight  # (16, 12), (16, 1), (1, 16)
    for b in range(B):
        scores = torch.stack([wv @ torch.tanh(wq @ au[b] + wk[:, 0] * ex[b, j]) for j in range(8)]).squeeze(-1)
        weights = torch.exp(scores) / torch.exp(scores).sum()
        torch.testing.assert_close(alpha[b], weights)
        torch.testing.assert_close(refined[b], weights * ex[b])
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B, dtype=torch.float64))
    assert not any(m.bias is not None for m in (module.query, module.key, module.score))
    with pytest.raises(ValueError, match="expr_logits"):
        module(au, ex[:, :7])


def test_published_style_queries_with_the_au_logits_and_freeze_au_path_keeps_them_fixed():
    torch.manual_seed(0)
    cfg = MTLConfig(token_dim=C, dim=DIM, depth=1, heads=2, dropout=0.0, au_expr_attention=True,
                    au_expr_style="published")
    model = MultiTaskModel(cfg, cooccurrence_adjacency(_cond()))
    assert isinstance(model.au_to_expr, AUQueryExprAttention)
    x, batch = torch.randn(8, N, C), _batch(8)
    with torch.no_grad():
        out = model(x, return_attention=True)
        plain = model.heads(model.graph(model.encoder(x)[0][:, AU_SLICE]),
                            model.encoder(x)[0][:, EXPR_SLICE], model.encoder(x)[0][:, VA_SLICE])
    torch.testing.assert_close(out["au"], plain["au"])
    torch.testing.assert_close(out["expr"], out["au_to_expr"] * plain["expr"])  # the AU logits queried
    frozen = freeze_au_path(model)
    assert frozen and all(n.startswith(("encoder.", "graph.", "heads.au.")) for n in frozen)
    assert not any(n.startswith(("heads.expr.", "heads.va.", "au_to_expr.")) for n in frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        MultiTaskLoss()(model(x), batch)[0].backward()
        opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in ("heads.expr.weight", "au_to_expr.query.weight"))
    with torch.no_grad():
        torch.testing.assert_close(model(x)["au"], out["au"])  # the AU prediction did not move
        assert not torch.allclose(model(x)["expr"], out["expr"])
    with pytest.raises(ValueError, match="au_expr_style"):
        MTLConfig(token_dim=C, au_expr_attention=True, au_expr_style="reversed")


# --------------------------------------------------------------------------- AU graph


def test_cooccurrence_adjacency_row_normalised():
    p = _cond()
    adj = cooccurrence_adjacency(p, threshold=0.4)
    assert adj.shape == (12, 12) and adj.dtype == torch.float32
    assert (adj >= 0).all()
    torch.testing.assert_close(adj.sum(1), torch.ones(12))
    assert (torch.diagonal(adj) > 0).all()
    raw = cooccurrence_adjacency(p, threshold=0.4, normalize=False, self_loops=False)
    off = ~np.eye(12, dtype=bool)
    expected = (np.nan_to_num(p) >= 0.4) & off
    assert set(raw.unique().tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(raw.numpy().astype(bool), expected)
    assert raw[11].sum() == 0  # the NaN row has no edges
    weighted = cooccurrence_adjacency(p, threshold=0.4, binary=False, normalize=False, self_loops=False)
    np.testing.assert_allclose(weighted.numpy(), np.where(expected, p, 0.0), rtol=1e-6)


def test_cooccurrence_adjacency_symmetric_and_dataframe_input():
    p = pd.DataFrame(_cond(), index=AU_NAMES, columns=AU_NAMES)
    adj = cooccurrence_adjacency(p, threshold=0.4, symmetric=True)
    torch.testing.assert_close(adj, adj.T)
    assert (adj >= 0).all() and (torch.diagonal(adj) > 0).all()
    assert torch.linalg.eigvalsh(adj.double()).max().item() == pytest.approx(1.0, abs=1e-6)
    no_loops = cooccurrence_adjacency(p, threshold=0.4, self_loops=False, normalize=False)
    assert (torch.diagonal(no_loops) == 0).all()


@pytest.mark.parametrize("weighted", [True, False])
def test_learned_topk_graph_keeps_k_neighbours_plus_self(weighted):
    graph = LearnedTopKGraph(DIM, k=4, weighted=weighted)
    adj = graph(torch.randn(B, 12, DIM))
    assert adj.shape == (B, 12, 12)
    assert ((adj > 0).sum(-1) == 5).all()
    assert (torch.diagonal(adj, dim1=-2, dim2=-1) > 0).all()
    torch.testing.assert_close(adj.sum(-1), torch.ones(B, 12))
    with pytest.raises(ValueError):
        LearnedTopKGraph(DIM, k=12)(torch.randn(B, 12, DIM))


@pytest.mark.parametrize("fixed, learned_k", [(True, None), (False, 3), (True, 3)])
def test_au_graph_shapes(fixed, learned_k):
    adjacency = cooccurrence_adjacency(_cond()) if fixed else None
    graph = AUGraph(DIM, layers=2, adjacency=adjacency, learned_k=learned_k)
    nodes, adj = graph(torch.randn(B, 12, DIM), return_adjacency=True)
    assert nodes.shape == (B, 12, DIM)
    assert adj.shape == ((12, 12) if learned_k is None else (B, 12, 12))
    torch.testing.assert_close(adj.sum(-1), torch.ones(adj.shape[:-1]))  # mean of row-normalised graphs
    assert GCNLayer(DIM, 16)(torch.randn(B, 12, DIM), adj).shape == (B, 12, 16)
    if fixed:
        assert "adjacency" in graph.state_dict()


def test_au_graph_needs_a_graph():
    with pytest.raises(ValueError):
        AUGraph(DIM)


@pytest.mark.parametrize("assist, pool", [(True, "mean"), (True, "attention"), (False, "mean")])
def test_au_assisted_heads(assist, pool):
    heads = AUAssistedHeads(DIM, assist=assist, pool=pool)
    out = heads(torch.randn(B, 12, DIM), torch.randn(B, 8, DIM), torch.randn(B, 2, DIM) * 10)
    assert out["au"].shape == (B, 12) and out["expr"].shape == (B, 8) and out["va"].shape == (B, 2)
    assert out["va"].abs().max() <= 1
    assert ("graph" in out) == assist


# --------------------------------------------------------------------------- the multi-task model


@pytest.mark.parametrize("cross_attention", [True, False])
@pytest.mark.parametrize("gcn, learned_k, use_cooccurrence",
                         [(False, None, False), (True, 4, True), (True, None, True), (True, 4, False)])
@pytest.mark.parametrize("au_expr_attention", [False, True])
def test_model_shapes(cross_attention, gcn, learned_k, use_cooccurrence, au_expr_attention):
    cfg = MTLConfig(token_dim=C, dim=DIM, depth=1, heads=2, cross_attention=cross_attention, gcn=gcn,
                    learned_k=learned_k, use_cooccurrence=use_cooccurrence,
                    au_expr_attention=au_expr_attention)
    model = MultiTaskModel(cfg, cooccurrence_adjacency(_cond()) if gcn and use_cooccurrence else None)
    x = torch.randn(B, N, C)
    out = model(x)
    assert set(out) == {"au", "expr", "va"}
    assert out["au"].shape == (B, 12) and out["expr"].shape == (B, 8) and out["va"].shape == (B, 2)
    assert out["va"].abs().max() <= 1
    full = model(x, return_attention=True)
    assert len(full["attention"]) == (1 if cross_attention else 0)
    for a in full["attention"]:
        assert a.shape == (B, 2, 22, N)
    feats = full["features"]
    for task in ("au", "expr", "va"):
        assert feats[task].shape == (B, DIM)
    assert feats["au_nodes"].shape == (B, 12, DIM)
    assert ("graph" in feats) == gcn
    assert ("au_to_expr" in full) == au_expr_attention
    assert set(model(x, return_features=True)) == {"au", "expr", "va", "features"}
    assert count_parameters(model) > 0


def test_config_validation():
    with pytest.raises(ValueError, match="token_dim"):
        MTLConfig()
    with pytest.raises(ValueError, match="graph"):
        MTLConfig(token_dim=C, gcn=True, learned_k=None, use_cooccurrence=False)
    with pytest.raises(ValueError, match="tokens have shape"):
        MultiTaskModel(MTLConfig(token_dim=C, dim=DIM, heads=2))(torch.randn(B, N, C + 1))


def test_gradients_reach_queries_token_projection_graph_and_heads():
    cfg = MTLConfig(token_dim=C, dim=DIM, depth=1, heads=2, dropout=0.0, au_expr_attention=True)
    model = MultiTaskModel(cfg, cooccurrence_adjacency(_cond()))
    total, _ = MultiTaskLoss()(model(torch.randn(8, N, C)), _batch(8))
    total.backward()
    named = dict(model.named_parameters())
    for name in ("encoder.queries.embedding", "encoder.reducer.weight", "graph.layers.0.linear.weight",
                 "graph.learned.proj.weight", "heads.au.weight", "heads.expr.weight", "heads.va.weight",
                 "au_to_expr.out.weight"):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def _train(model: MultiTaskModel, x: torch.Tensor, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = MultiTaskLoss()
    losses = []
    for _ in range(steps):
        total, _ = loss_fn(model(x), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    return losses


def test_tiny_model_overfits_a_fixed_batch():
    cfg = MTLConfig(token_dim=C, dim=DIM, depth=1, heads=2, dropout=0.0)
    model = MultiTaskModel(cfg, cooccurrence_adjacency(_cond()))
    losses = _train(model, torch.randn(16, N, C), _batch(16), steps=300)
    assert losses[-1] < 0.05, losses[::50]


def test_baseline_learns():
    cfg = MTLConfig(token_dim=C, dim=DIM, cross_attention=False, gcn=False, dropout=0.0)
    model = MultiTaskModel(cfg)
    assert model.encoder is None and model.graph is None
    losses = _train(model, torch.randn(16, N, C), _batch(16), steps=150)
    assert losses[-1] < 0.5 * losses[0]


def test_build_model_uses_the_training_table():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.integers(0, 2, (50, 12)), columns=list(AU_NAMES)).assign(has_au=True)
    cfg = MTLConfig(token_dim=C, dim=DIM, heads=2, depth=1, learned_k=None)
    model = build_model(cfg, table)
    from course_lib.data.label_stats import au_cooccurrence

    torch.testing.assert_close(model.graph.adjacency, cooccurrence_adjacency(au_cooccurrence(table)))
    with pytest.raises(ValueError, match="train_table"):
        build_model(cfg)
    assert build_model(MTLConfig(token_dim=C, gcn=False)).graph is None
    # the placeholder graph is replaced by a checkpoint's
    fresh = MultiTaskModel(cfg)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.graph.adjacency, model.graph.adjacency)


@pytest.mark.parametrize("freeze", [False, True])
def test_image_input_model_forward_backward(freeze):
    cfg = MTLConfig(backbone="resnet10t", image_size=64, dim=DIM, depth=1, heads=2, freeze_backbone=freeze)
    model = MultiTaskModel(cfg)
    assert model.token_dim == 512
    model.train()
    out = model(torch.rand(2, 3, 64, 64), return_attention=True)
    assert out["au"].shape == (2, 12) and out["attention"][0].shape == (2, 2, 22, 16)
    (out["au"].sum() + out["expr"].sum() + out["va"].sum()).backward()
    grad = model.backbone.model.conv1[0].weight.grad
    assert model.encoder.reducer.weight.grad is not None
    if freeze:
        assert grad is None and not model.backbone.model.training
        assert count_parameters(model, trainable_only=True) < count_parameters(model)
    else:
        assert grad is not None and grad.abs().sum() > 0


# --------------------------------------------------------------------------- backbones


def test_resnet18_output_stride_16_gives_7x7_at_112():
    bb = create_backbone("resnet18")
    out = bb(torch.rand(2, 3, 112, 112))
    assert bb.family == "cnn" and bb.grid_size == (7, 7) and bb.num_features == 512
    assert out["tokens"].shape == (2, 49, 512) and out["pooled"].shape == (2, 512)
    torch.testing.assert_close(out["pooled"], out["tokens"].mean(1), atol=1e-5, rtol=1e-5)
    assert not bb.pretrained_loaded
    assert create_backbone("resnet18", output_stride=32).grid_size == (4, 4)


def test_normalisation_buffer_is_applied():
    bb = create_backbone("resnet18").eval()
    cfg = timm.data.resolve_model_data_config(bb.model)
    assert "mean" in dict(bb.named_buffers()) and "std" in dict(bb.named_buffers())
    x = torch.rand(2, 3, 112, 112)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(bb.normalize(x), (x - mean) / std)
    expected = bb.model.forward_features((x - mean) / std).flatten(2).transpose(1, 2)
    torch.testing.assert_close(bb(x)["tokens"], expected)
    assert bb(torch.rand(1, 3, 80, 80))["tokens"].shape == (1, 49, 512)  # resized to image_size


@pytest.mark.parametrize("kwargs, grid", [({}, (7, 7)), ({"patch_size": 8}, (14, 14))])
def test_tiny_vit_at_112_has_patch_tokens_only(kwargs, grid):
    bb = create_backbone("vit_tiny_patch16_224", image_size=112, **kwargs).eval()
    x = torch.rand(2, 3, 112, 112)
    out = bb(x)
    assert bb.family == "vit" and bb.grid_size == grid
    assert out["tokens"].shape == (2, grid[0] * grid[1], 192) and out["pooled"].shape == (2, 192)
    feats = bb.model.forward_features(bb.normalize(x))
    torch.testing.assert_close(out["tokens"], feats[:, 1:])  # the class token is left out
    torch.testing.assert_close(out["pooled"], feats[:, 0])  # pooled = class token
    with pytest.raises(ValueError, match="output_stride"):
        create_backbone("vit_tiny_patch16_224", output_stride=16)


def test_dinov2_small_rounds_to_a_multiple_of_14(capsys):
    start = time.perf_counter()
    bb = create_backbone("vit_small_patch14_dinov2.lvd142m", image_size=100)
    if time.perf_counter() - start > 10:
        pytest.skip("building DINOv2-small took over 10 s on this machine (slow)")
    assert "using 98" in capsys.readouterr().out
    assert bb.family == "dinov2" and bb.image_size == 98 and bb.grid_size == (7, 7)
    out = bb(torch.rand(1, 3, 112, 112))
    assert out["tokens"].shape == (1, 49, 384)


def test_pretrained_offline_falls_back_without_network(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    calls = []
    real = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    bb = create_backbone("resnet18", pretrained=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["pretrained weights for resnet18 unavailable offline: using random initialisation"]
    assert not bb.pretrained_loaded and calls == [False]


def test_pretrained_download_failure_falls_back(monkeypatch, capsys):
    monkeypatch.setattr(backbones, "is_offline", lambda: False)
    real = timm.create_model

    def failing(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no route to host")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", failing)
    bb = create_backbone("resnet10t", pretrained=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "unavailable (OSError)" in lines[0]
    assert not bb.pretrained_loaded


def test_backbone_fingerprint_tracks_weights_and_size():
    bb = create_backbone("resnet18")
    key = backbone_fingerprint(bb)
    assert key == backbone_fingerprint(bb) and len(key) == 16
    with torch.no_grad():
        bb.model.conv1.weight[0, 0, 0, 0] += 1e-3
    assert backbone_fingerprint(bb) != key
    torch.manual_seed(0)
    a = backbone_fingerprint(create_backbone("resnet10t", image_size=112))
    torch.manual_seed(0)
    b = backbone_fingerprint(create_backbone("resnet10t", image_size=64))
    assert a != b


def test_token_stride_cuts_a_cnn_after_its_stride_16_stage():
    from course_lib.models import create_backbone

    bb = create_backbone("lcnet_050", image_size=112, token_stride=16)
    out = bb(torch.rand(2, 3, 112, 112))
    assert bb.grid_size == (7, 7) and bb.num_features == 128
    assert out["tokens"].shape == (2, 49, 128) and out["pooled"].shape == (2, 128)
    assert torch.allclose(out["pooled"], out["tokens"].mean(dim=1), atol=1e-5)
    assert not hasattr(bb.model, "conv_head") or bb.model.conv_head is None or isinstance(bb.model.conv_head, torch.nn.Identity)
    with pytest.raises(ValueError, match="no stage of stride 64"):
        create_backbone("lcnet_050", token_stride=64)
    with pytest.raises(ValueError, match="not both"):
        create_backbone("resnet18", token_stride=16, output_stride=16)


def test_task_queries_start_distinct():
    """Queries initialised at unit scale are nearly orthogonal, not near-copies of each other."""
    from course_lib.models.cross_attention import TaskQueries

    torch.manual_seed(0)
    q = TaskQueries(64).embedding.detach()
    q = torch.nn.functional.normalize(q, dim=-1)
    off_diagonal = (q @ q.T)[~torch.eye(len(q), dtype=torch.bool)]
    assert off_diagonal.abs().mean() < 0.2
