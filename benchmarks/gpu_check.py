"""The prepared GPU check: full mode on a CUDA GPU in one go, one JSON report (goal: under 8 minutes).

    .venv/bin/python benchmarks/gpu_check.py [--out build/gpu_check.json] [--budget-s 480] [--scale 0.25]
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # the same steps on a CPU at tiny scale (a test)

GPU machines are lent rarely and briefly, so everything that needs one runs from this one
command, each step in its own process with a time limit, in this order:

1. ``pretrain``: the pretraining command at its GPU size (``python -m course_lib.pretrain --size
   gpu``) for ``--pretrain-steps`` steps: throughput and the probe as it goes.
2. ``notebooks``: notebooks 02-05 and 08 in full mode at ``COURSE_SCALE=--scale`` (default 0.25,
   so that they fit the budget; ``--scale 1`` is full size), executed with papermill as ``make
   course`` does.
3. ``quality``: ``benchmarks/quality.py --mode full`` at the same scale (its last line, a JSON object).
4. ``train_speed``: ``benchmarks/train_speed.py`` (the pipeline's overhead over the bare backbone,
   bf16 autocast and channels-last on CUDA).

While each step runs, the device's used memory is sampled (``torch.cuda.mem_get_info``), so the
report has each step's peak GPU memory, notebook kernels included. Each step gets its share of the
budget (:data:`CAPS`, plus what the steps before it left unused); a step that fails or runs out of
time is recorded as such and the next one still runs. The report: ``{"device", "dry_run", "scale", "budget_s", "seconds", "steps":
{name: {"ok", "seconds", "peak_gpu_mib", "error", "result"}}}``, also printed as the last line.

``--dry-run`` runs the same steps on the CPU at tiny scale (pretraining ``--size tiny``, notebook
00 in full mode at ``COURSE_SCALE=0.02``, a small quality data set, two timed training steps):
``tests/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("02_backbones_and_features", "03_cross_attention", "04_au_graph", "05_progressive_training",
             "08_evaluation")


class MemorySampler:
    """The peak of the device's used memory (all processes) while a step runs, in MiB; None on a CPU."""

    def __init__(self, every_s: float = 0.5) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "MemorySampler":
        if self.cuda:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._stop.set()
            self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return round(self.peak / 2**20, 1) if self.cuda else None


def run_step(command: list[str], *, timeout_s: float, env: dict[str, str]) -> dict:
    """Run one step's command; return ok, seconds, peak GPU memory, the error, and the last JSON line printed."""
    start = time.perf_counter()
    with MemorySampler() as memory:
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
            ok, out, err = done.returncode == 0, done.stdout, done.stderr
            error = None if ok else f"exit {done.returncode}: {(err.strip() or out.strip()).splitlines()[-1:]}"
        except subprocess.TimeoutExpired as exc:
            ok, out = False, exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            error = f"timed out after {timeout_s:.0f} s"
    result = None
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    return {"ok": ok, "seconds": round(time.perf_counter() - start, 1), "peak_gpu_mib": memory.peak_mib,
            "error": error, "result": result, "tail": out.strip().splitlines()[-3:]}


#: Each step's share of the budget, in seconds (a step that finishes early leaves its rest to the next).
CAPS = {"pretrain": 90, "notebooks": 270, "quality": 80, "train_speed": 40}


def scale_of(args: argparse.Namespace) -> float:
    """The ``COURSE_SCALE`` of the full-mode steps: ``--scale``, or 0.02 in a dry run."""
    return 0.02 if args.dry_run else args.scale


def steps(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """Each step: its name, its command and its extra environment."""
    py = sys.executable
    full = {"COURSE_SMOKE": "0", "COURSE_SCALE": f"{scale_of(args):g}"}
    notebooks = ("00_welcome_and_setup",) if args.dry_run else NOTEBOOKS
    runner = ("import sys, json; from pathlib import Path; from course_lib.tooling.execution import execute_notebook; "
              "runs = [execute_notebook(Path('notebooks') / f'{n}.ipynb', Path(sys.argv[1]), mode='full') "
              "for n in sys.argv[2:]]; "
              "print(json.dumps({r.name: {'ok': r.ok, 'seconds': round(r.seconds, 1), 'error': r.error} "
              "for r in runs})); sys.exit(0 if all(r.ok for r in runs) else 1)")
    pretrain = [py, "-m", "course_lib.pretrain", "--out", str(work / "pretrain")]
    pretrain += ["--size", "tiny"] if args.dry_run else ["--size", "gpu", "--until", str(args.pretrain_steps)]
    quality = [py, "benchmarks/quality.py", "--mode", "full", "--root", str(work / "quality")]
    quality += ["--videos", "12", "--frames", "40"] if args.dry_run else []
    speed = [py, "benchmarks/train_speed.py"] + (["--steps", "2", "--batch", "8"] if args.dry_run else [])
    return [("pretrain", pretrain, {}),
            ("notebooks", [py, "-c", runner, str(work / "notebooks"), *notebooks], full),
            ("quality", quality, full),
            ("train_speed", speed, {})]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting steps after this (default 8 min)")
    parser.add_argument("--scale", type=float, default=0.25,
                        help="COURSE_SCALE of the full-mode notebooks and quality run (1: full size)")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="pretraining steps at the GPU size")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny scale")
    parser.add_argument("--work", type=Path, default=None, help="folder for the steps' outputs (default: a temp one)")
    args = parser.parse_args(argv)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --dry-run to rehearse on the CPU")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COURSE_OFFLINE": "1", "COURSE_HEADLESS": "1"}
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else \
        f"CPU, {os.cpu_count()} cores"
    report = {"device": device, "torch": torch.__version__, "dry_run": args.dry_run, "scale": scale_of(args),
              "budget_s": args.budget_s, "steps": {}}
    start, saved = time.perf_counter(), 0.0
    for name, command, extra in steps(args, work):
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 5:
            report["steps"][name] = {"ok": False, "error": "skipped: the budget was spent"}
            continue
        cap = min(left, CAPS[name] * args.budget_s / sum(CAPS.values()) + saved)
        shown = " ".join(command[1:3] if command[1] != "-c" else ["course_lib.tooling.runner", *command[4:]])
        print(f"{name}: {shown} (at most {cap:.0f} s)", flush=True)
        report["steps"][name] = outcome = run_step(command, timeout_s=cap, env={**env, **extra})
        saved = max(0.0, cap - outcome["seconds"])
        print(f"  {'ok' if outcome['ok'] else outcome['error']} in {outcome['seconds']} s, peak GPU memory "
              f"{outcome['peak_gpu_mib']} MiB", flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(step["ok"] for step in report["steps"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
