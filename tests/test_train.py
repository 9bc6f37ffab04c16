"""course_lib.train: schedule, learning, best-epoch restore, early stopping, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course_lib.metrics import p_mtl
from course_lib.train import TrainConfig, evaluate, fit, predict, score, warmup_cosine


class TokenSet(Dataset):
    """Random token sets whose labels depend on the tokens (learnable), with missing labels."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, 8, generator=g)
        m = self.x.mean(dim=1)
        self.au = (torch.cat([m, m[:, :4]], dim=1) > 0).float()
        self.expr = m[:, :8].argmax(dim=1)
        self.va = torch.tanh(m[:, :2])
        self.has = torch.rand(n, 3, generator=g) > 0.2

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"tokens": self.x[i], "au": self.au[i], "expr": self.expr[i], "va": self.va[i],
                "has_au": self.has[i, 0], "has_expr": self.has[i, 1], "has_va": self.has[i, 2], "index": i}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.GELU())
        self.au, self.expr, self.va = nn.Linear(32, 12), nn.Linear(32, 8), nn.Linear(32, 2)

    def forward(self, tokens):
        h = self.body(tokens).mean(dim=1)
        return {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}


def _loaders(seed=0):
    train = DataLoader(TokenSet(256, seed), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TokenSet(128, seed + 1), batch_size=64)
    return train, val


def test_warmup_then_cosine():
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.02) and f(100) == pytest.approx(0.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_fit_learns_and_restores_the_best_epoch():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    before = evaluate(model, val)["total"]
    result = fit(model, train, val, config=TrainConfig(epochs=12, lr=1e-2), progress_bar=False)
    history = result.history
    assert list(history.epoch) == list(range(1, 13))
    assert history.loss.iloc[-1] < 0.5 * history.loss.iloc[0]
    assert result.best_scores["total"] == pytest.approx(history.val_total.max())
    assert evaluate(model, val)["total"] == pytest.approx(history.val_total.max(), abs=1e-9)
    assert history.val_total.max() > before + 1.0
    assert result.frames_per_second > 0 and result.steps == 12 * len(train)


def test_early_stopping_stops():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    result = fit(model, train, val, config=TrainConfig(epochs=40, lr=0.0, patience=2), progress_bar=False)
    assert len(result.history) == 3 and result.best_epoch == 1  # lr 0: nothing improves after epoch 1


def test_predict_and_score_agree_with_p_mtl():
    model, (_, val) = Tiny(), _loaders()
    out = predict(model, val)
    assert out["au_pred"].shape == (128, 12) and out["expr_pred"].shape == (128, 8) and out["va_pred"].shape == (128, 2)
    assert np.all((out["au_pred"] >= 0) & (out["au_pred"] <= 1))
    assert sorted(out["index"].tolist()) == list(range(128))
    ds = val.dataset
    va = np.where(ds.has[:, 2:3].numpy(), ds.va.numpy(), -5.0)
    expr = np.where(ds.has[:, 1].numpy(), ds.expr.numpy(), -1)
    au = np.where(ds.has[:, 0:1].numpy(), ds.au.numpy(), -1)
    want = p_mtl(va, out["va_pred"], expr, out["expr_pred"], au, out["au_pred"])
    assert score(out)["total"] == pytest.approx(want["total"], abs=1e-9)


class Interrupt(Exception):
    pass


def _stop_after(epoch):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Interrupt

    return on_epoch


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    config = dict(epochs=5, lr=1e-2, patience=None)
    torch.manual_seed(0)
    model_a, (train_a, val_a) = Tiny(), _loaders()
    whole = fit(model_a, train_a, val_a, config=TrainConfig(**config), progress_bar=False)

    ckpt = tmp_path / "run" / "checkpoint.pt"
    torch.manual_seed(0)
    model_b, (train_b, val_b) = Tiny(), _loaders()
    with pytest.raises(Interrupt):  # stopped after epoch 2 (the checkpoint of epoch 2 is written first)
        fit(model_b, train_b, val_b, config=TrainConfig(**config, checkpoint=str(ckpt)), progress_bar=False,
            on_epoch=_stop_after(2))
    assert ckpt.exists() and not list(ckpt.parent.glob(".*tmp"))
    torch.manual_seed(123)  # a new process: other random state, other fresh weights, a new loader
    model_c, (train_c, val_c) = Tiny(), _loaders()
    train_c.generator.manual_seed(99)
    resumed = fit(model_c, train_c, val_c, config=TrainConfig(**config, checkpoint=str(ckpt)), progress_bar=False)
    assert resumed.extra["resumed_from_epoch"] == 2
    assert list(resumed.history.epoch) == [1, 2, 3, 4, 5]
    assert resumed.steps == whole.steps
    np.testing.assert_array_equal(resumed.history.loss.to_numpy(), whole.history.loss.to_numpy())
    np.testing.assert_array_equal(resumed.history.val_total.to_numpy(), whole.history.val_total.to_numpy())
    for (name, a), b in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, b), name
    # a finished run is reused, not retrained
    again = fit(Tiny(), *_loaders(), config=TrainConfig(**config, checkpoint=str(ckpt)), progress_bar=False)
    assert again.extra["resumed_from_epoch"] == 5 and again.best_epoch == whole.best_epoch


def test_checkpoint_with_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    fit(Tiny(), *_loaders(), config=TrainConfig(epochs=1, checkpoint=str(ckpt)), progress_bar=False)
    with pytest.raises(ValueError, match=r"c\.pt.*other settings \(epochs, lr\)"):
        fit(Tiny(), *_loaders(), config=TrainConfig(epochs=2, lr=0.5, checkpoint=str(ckpt)), progress_bar=False)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"c\.pt: not a readable checkpoint"):
        fit(Tiny(), *_loaders(), config=TrainConfig(epochs=1, checkpoint=str(ckpt)), progress_bar=False)


def test_mixed_precision_is_skipped_cleanly_on_cpu():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    result = fit(model, train, val, config=TrainConfig(epochs=1, amp=True, channels_last=False), device="cpu",
                 progress_bar=False)
    assert result.extra["amp"] == "off" and "skipped on cpu" in result.extra["note"]
    assert next(model.parameters()).dtype == torch.float32
    default = fit(Tiny(), train, val, config=TrainConfig(epochs=1), device="cpu", progress_bar=False)
    assert default.extra["amp"] == "off" and default.extra["channels_last"] is False and default.extra["note"] == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_cuda_learns():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    result = fit(model, train, val, config=TrainConfig(epochs=12, lr=1e-2), device="cuda", progress_bar=False)
    assert result.extra["amp"] in ("bfloat16", "float16")
    assert result.history.val_total.max() > result.history.val_total.iloc[0]


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.tiny = Tiny()
        self.gate = nn.Linear(1, 32)

    def forward(self, tokens, scale):
        h = self.tiny.body(tokens * scale[:, None, None]).mean(dim=1)
        return {"au": self.tiny.au(h), "expr": self.tiny.expr(h), "va": torch.tanh(self.tiny.va(h))}


def test_a_tuple_of_input_keys_calls_the_model_with_several_inputs():
    class Scaled(TokenSet):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "scale": torch.tensor(2.0)}

    loader = DataLoader(Scaled(64, 0), batch_size=16)
    result = fit(TwoInputs(), loader, loader, input_key=("tokens", "scale"), config=TrainConfig(epochs=1),
                 progress_bar=False)
    assert len(result.history) == 1
    with pytest.raises(KeyError, match="no \\['audio'\\]"):
        fit(TwoInputs(), loader, input_key=("tokens", "audio"), config=TrainConfig(epochs=1), progress_bar=False)


def _ddp_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        torch.manual_seed(0)
        model, (train, val) = Tiny(), _loaders()
        config = TrainConfig(epochs=3, lr=1e-2, checkpoint=str(out_dir / "ddp.pt"))
        result = fit(model, train, val, config=config, progress_bar=False)
        torch.save({"state": model.state_dict(), "steps": result.steps, "world": result.extra["world_size"],
                    "history": result.history}, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_with_two_cpu_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    n_batches = len(_loaders()[0])  # 8 batches of 32 in one process
    assert r0["steps"] == r1["steps"] == 3 * n_batches // 2  # each rank trains on half of every epoch
    for (name, a), b in zip(r0["state"].items(), r1["state"].values()):
        assert torch.equal(a, b), f"{name} differs between the ranks"
    assert list(r0["history"].epoch) == [1, 2, 3]
    assert r0["history"].val_total.iloc[-1] > r0["history"].val_total.iloc[0]
    saved = torch.load(tmp_path / "ddp.pt", weights_only=False)  # written by rank 0 only, complete
    assert saved["epoch"] == 3
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_emulated_bf16_counts_as_unsupported(monkeypatch):
    """A T4 emulates bf16 (slowly): fit must then choose float16 with a GradScaler."""
    from course_lib import train

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert train.native_bf16() is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert train.native_bf16() is True


def test_live_curves_update_one_figure_in_an_executed_notebook(tmp_path):
    """Papermill keeps one figure per LiveCurves holding every epoch (not one per epoch), and plotly.js once."""
    import nbformat

    from course_lib.tooling.execution import execute_notebook

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("SMOKE = True"),
        nbformat.v4.new_code_cell("from course_lib.tooling.notebook import configure_plotly\nconfigure_plotly()\n"
                                  "import plotly.graph_objects as go\ngo.Figure(go.Bar(y=[1, 2])).show()\n"
                                  "from course_lib.curves import LiveCurves\ncurves = LiveCurves('demo')\nmore = LiveCurves('second')\n"
                                  "for e in range(1, 4):\n    row = {'epoch': e, 'loss': 1.0 / e, 'loss_au': 0.5, 'loss_expr': 0.3, 'loss_va': 0.2,"
                                  " 'val_total': 0.1 * e, 'val_au': 0.1, 'val_expr': 0.2, 'val_va': 0.3}\n"
                                  "    curves(row)\n    more(row)"),
    ])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "live.ipynb")
    run = execute_notebook(tmp_path / "live.ipynb", tmp_path / "out", mode="smoke")
    assert run.ok, run.error
    outputs = nbformat.read(run.output, as_version=4).cells[-1].outputs
    bundles = [o.get("data", {}).get("text/html", "") for c in nbformat.read(run.output, as_version=4).cells
               for o in c.get("outputs", [])]
    assert sum("plotly.js v" in html for html in bundles) <= 1, "plotly.js embedded more than once"
    figures = [o.data["application/vnd.plotly.v1+json"] for o in outputs
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 3, f"{len(figures)} figures: one bar chart, one per LiveCurves"
    for figure in figures[1:]:
        x = figure["data"][0]["x"]
        if isinstance(x, dict):  # plotly 6+ sends numeric arrays as typed, base64-encoded buffers
            import base64

            import numpy as np

            x = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
        assert list(x) == [1, 2, 3]
