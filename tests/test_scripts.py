"""Every script under scripts/ runs at a tiny size: it starts, runs its rows and prints its table.

Sizes are the smallest each script allows, so the figures mean nothing; what is checked is that a
refactor of the package did not leave a benchmark, the demo or a study script broken behind it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PY = sys.executable


def env(data_root: Path | None = None) -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if data_root is not None:
        out["RUD_DATA"] = str(data_root)
    return out


def run(args: list[str], data_root: Path | None = None, timeout: int = 600, cwd: Path = ROOT) -> str:
    """Run a command; fail with its output on a non-zero exit."""
    proc = subprocess.run(args, cwd=cwd, env=env(data_root), capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc.stdout


COVERED = {"benchmark.py", "bench_boxes.py", "bench_wbc.py", "bench_preprocess.py", "bench_loader.py",
           "bench_step.py", "bench_threads.py", "bench_inference.py", "bench_models.py", "bench_gpu.py",
           "bench_scan.py", "plan_coverage.py", "sweep_gain.py", "toy_study.py", "demo.sh", "setup.sh", "gpu_check.sh",
           "peer_monai.py", "bench_onnx.py", "rehearse_ct.sh", "rehearse_step.py", "stage_stats.py", "export_dicom.py",
           "learning_curves.py"}
# tiny runs elsewhere: peer_monai.py in tests/test_peer_monai.py, stage_stats.py in tests/test_stage_stats.py,
# export_dicom.py in tests/test_dicom_series.py, learning_curves.py in tests/test_learning_curves.py;
# rehearse_ct.sh (which runs rehearse_step.py) below
# scripts that only show that they start (--help, or bash -n); none at present, each would need a tiny run here
STARTS_ONLY: set[str] = set()


def present_scripts() -> set[str]:
    return {p.name for p in SCRIPTS.iterdir() if p.suffix in (".py", ".sh")}


def test_every_script_is_smoke_tested():
    """A new script under scripts/ needs its smoke run here."""
    missing = present_scripts() - COVERED - STARTS_ONLY
    assert not missing, f"scripts without a smoke run: {sorted(missing)}"


def test_rehearse_ct_tiny_runs_every_stage(tmp_path):
    """The chest CT rehearsal at its smallest: 3 scans of 24 x 24 x 8-10, every stage a row of its table."""
    environment = {**env(tmp_path / "data"), "SCANS": "3", "SIZE": "24", "SLICES": "8 10", "TRAIN_BATCHES": "1",
                   "GPU_MEMORY": "2", "GPU_STEPS": "1", "RAM_CAP_GB": "1", "PREDICT_SCANS": "1",
                   "OUT": str(tmp_path / "out"), "PYTHON": PY}
    proc = subprocess.run(["bash", "scripts/rehearse_ct.sh"], cwd=ROOT, env=environment, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rehearse_ct.sh exited {proc.returncode}:\n{out[-4000:]}"
    table = (tmp_path / "out" / "stages.md").read_text()
    for stage in ("rud_example chestct", "rud_convert luna16", "rud_plan --gpu-memory 2", "rud_plan (CPU)",
                  "rud_preprocess --shard 0/2", "rud_preprocess --shard 1/2", "rud_train 0 (CPU plan)",
                  "rud_predict (whole scans)", "rud_evaluate --luna"):
        assert f"| {stage} |" in table, f"no {stage} row:\n{table}"
    assert "**exit" not in table, table  # every stage exited 0
    step = (tmp_path / "out" / "gpu_step.md").read_text()  # rehearse_step.py: the GPU plan's step ran on the CPU
    assert "| 1 |" in step and "not run" not in step, step
    assert "crop:" in (tmp_path / "out" / "crop.md").read_text()


def test_benchmark_tiny_runs_every_row(tmp_path):
    out = run([PY, "scripts/benchmark.py", "--tiny", "--json", str(tmp_path / "bench.json")], tmp_path / "nodata")
    assert "Profile: tiny" in out
    assert "| benchmark | figure | ours |" in out
    for bench in ("boxes", "wbc", "preprocess", "loader", "step", "models", "inference"):
        assert f"| {bench} |" in out, f"no {bench} row:\n{out}"
    assert "RESULTS DIFFER" not in out
    assert (tmp_path / "bench.json").is_file()


def test_bench_step_times_a_tasks_planned_network_per_model(tmp_path):
    from retinaunet.plans import make_test_plans, save_plans

    save_plans(make_test_plans(dim=2, patch_size=[64, 64]), tmp_path / "plans.json")
    out = run([PY, "scripts/bench_step.py", "--plans", str(tmp_path / "plans.json"), "--model", "retina_unet",
               "retina_net", "--reps", "1", "--by-layer", "4"])
    for model in ("retina_unet", "retina_net"):
        assert f"{model}] patch [64, 64] batch" in out, out
    assert out.count("training step") == 2
    shares = [float(m) for m in re.findall(r"all convolutions [0-9.]+ ms = ([0-9.]+)%", out)]
    assert len(shares) == 2 and all(0 < v <= 100 for v in shares), out  # convolutions are part of the step
    rows = [ln for ln in out.splitlines() if re.match(r"^\d+ x \d+ +\d+ <- \d+, \d+x\d+", ln)]
    assert len(rows) == 8, out  # the 4 costliest per model, each a 2D grid and a 2D kernel


@pytest.mark.parametrize("args, expect", [
    (["bench_boxes.py", "--sizes", "50", "--iou-cols", "50", "--ref-rows", "5"], "NMS"),
    (["bench_wbc.py", "--cases", "1", "--repeats", "1"], "numba"),
    (["bench_preprocess.py", "--shape", "40", "64", "64"], "speed-up"),
    (["bench_step.py", "--only", "2d", "--reps", "1"], "2d"),
    (["bench_threads.py", "--steps", "1", "--patch", "64", "--earlier-seconds", "1"], "fair share"),
    (["bench_inference.py", "--shape", "16", "32", "32", "--patch", "16", "32", "32", "--only", "0"],
     "whole-case inference"),
    (["bench_inference.py", "--network", "stub", "--shape", "16", "32", "32", "--patch", "16", "32", "32",
      "--only", "1"], "stub network"),
    (["bench_scan.py", "--slices", "16", "--size", "32", "--z-slices", "8", "--only", "baseline", "boxes only"],
     "whole-scan prediction"),
    (["bench_onnx.py", "--patch", "8", "16", "16", "--tiles", "2", "--repeats", "1"], "| onnxruntime |"),
], ids=lambda a: a[0] if isinstance(a, list) else None)
def test_bench_script_tiny(args, expect, tmp_path):
    out = run([PY, f"scripts/{args[0]}", *args[1:]], tmp_path)
    assert expect in out, out


def test_bench_loader_tiny(tmp_path):
    out = run([PY, "scripts/bench_loader.py", "--batches", "1", "--workers", "0", "--cases", "1"], tmp_path)
    assert "patches" in out.lower(), out


def test_bench_gpu_step_runs_on_cpu(tmp_path):
    """bench_gpu.py (gpu_check.sh's step benchmark) needs CUDA for its figures; its step runs on the CPU."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(SCRIPTS))
    import torch

    from retinaunet.plans import make_test_plans, save_plans

    path = tmp_path / "plans.json"
    save_plans(make_test_plans(dim=2, patch_size=[64, 64]), path)
    row = bench_gpu.run(path, False, 1, torch.device("cpu"))
    assert row["finite"] and row["step_ms"] > 0 and row["peak_gb"] is None


def test_shell_scripts_parse():
    for name in ("demo.sh", "setup.sh", "gpu_check.sh"):
        run(["bash", "-n", str(SCRIPTS / name)])


def test_gpu_check_python_parts_import():
    """gpu_check.sh runs these modules' main() through wrappers, and two scripts with $PY."""
    text = (SCRIPTS / "gpu_check.sh").read_text()
    modules = [m for m in ("retinaunet.toy_cli", "retinaunet.planning.cli", "retinaunet.preprocessing.cli",
                           "retinaunet.training.cli", "retinaunet.inference.cli", "retinaunet.evaluation.cli")
               if m in text]
    assert len(modules) == 6
    code = "; ".join(f"from {m} import main" for m in modules)
    run([PY, "-c", code])
    for script in ("bench_gpu.py", "bench_inference.py"):
        assert f"scripts/{script}" in text
        run([PY, f"scripts/{script}", "--help"])


def test_setup_is_idempotent():
    """A second run of setup.sh only checks (run where the tests run from the repository's .venv)."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        run(["bash", "-n", str(SCRIPTS / "setup.sh")])
        return
    run(["bash", str(SCRIPTS / "setup.sh")], timeout=1200)  # installs only what changed (e.g. pyproject)
    out = run(["bash", str(SCRIPTS / "setup.sh")])
    assert "installing" not in out


@pytest.fixture(scope="module")
def demo_task(tmp_path_factory) -> Path:
    """scripts/demo.sh at a tiny size: a trained fold 0 of the shapes toy, predicted and evaluated."""
    root = tmp_path_factory.mktemp("demo_data")
    environment = {**env(root), "DEMO_TRAIN": "15", "DEMO_TEST": "2", "DEMO_EPOCHS": "1", "DEMO_BATCHES": "2"}
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=environment, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"demo.sh exited {proc.returncode}:\n{out[-4000:]}"
    assert "mAP" in out or "AP@0.1" in out, out[-3000:]
    return root


def test_demo_ends_with_metrics(demo_task):
    run_dir = demo_task / "Task101_ToyShapes" / "predictions" / "demo"
    assert (run_dir / "evaluation" / "metrics.json").is_file()


def test_plan_coverage_tiny(demo_task):
    out = run([PY, "scripts/plan_coverage.py", "-t", "101", "--budgets", "cpu"], demo_task)
    assert "cpu" in out.lower(), out
    plans = demo_task / "Task101_ToyShapes" / "plans.json"  # a task's file of configurations: its default plan
    out = run([PY, "scripts/plan_coverage.py", "-t", "101", "--plans-file", str(plans)], demo_task)
    assert f"== {plans}" in out and "median best IoU" in out, out


def test_bench_models_tiny(demo_task):
    out = run([PY, "scripts/bench_models.py", "-t", "101", "--steps", "1"], demo_task)
    assert "retina_unet" in out and "mask_rcnn" in out, out


def test_sweep_gain_tiny(demo_task, tmp_path):
    out = run([PY, "scripts/sweep_gain.py", "-t", "101", "--fold", "0", "--max-cases", "2",
               "-o", str(tmp_path / "gain.json")], demo_task)
    assert (tmp_path / "gain.json").is_file()
    assert "planned" in out and "swept" in out, out


def test_toy_study_tiny(tmp_path):
    out = run([PY, "scripts/toy_study.py", "--profile", "tiny", "--data-root", str(tmp_path / "data"),
               "--out", str(tmp_path / "out"), "--threads", "1"], tmp_path / "data", timeout=900)
    assert (tmp_path / "out" / "toy_study.csv").is_file(), out
    assert (tmp_path / "out" / "toy_study.md").is_file()
