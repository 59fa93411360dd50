"""Two CPU processes with gloo run the trainer's step under DistributedDataParallel: same weights after."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp

from retinaunet.models import build_model
from retinaunet.plans import make_test_plans
from tests.test_trainer import task  # noqa: F401 - the fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(seed: int) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 1, 64, 64, generator=g)
    seg = torch.zeros(2, 64, 64, dtype=torch.long)
    boxes, labels = [], []
    for b in range(2):
        y, x = (int(v) for v in torch.randint(8, 40, (2,), generator=g))
        seg[b, y:y + 16, x:x + 16] = b + 1
        images[b, :, y:y + 16, x:x + 16] += 2.0
        boxes.append(torch.tensor([[y, x, y + 16, x + 16]], dtype=torch.float32))
        labels.append(torch.tensor([b]))
    return SimpleNamespace(images=images, boxes=boxes, labels=labels, seg=seg)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from retinaunet.training.distributed import init_distributed, shutdown
    from retinaunet.training.step import LossModule, train_step

    ctx = init_distributed("cpu")
    assert ctx.enabled and ctx.rank == rank
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = build_model("retina_unet", make_test_plans(dim=2))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    module = torch.nn.parallel.DistributedDataParallel(LossModule(model))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(3):
        train_step(module, opt, _batch(1000 * rank + step), torch.device("cpu"), ctx)
    torch.save({"initial": initial, "final": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    shutdown(ctx)


def test_two_ranks_hold_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    differs_initially = any(not torch.equal(r0["initial"][k], r1["initial"][k]) for k in r0["initial"])
    assert differs_initially, "ranks must start from different seeds for the test to mean something"
    changed = False
    for k, v in r0["final"].items():
        assert torch.equal(v, r1["final"][k]), f"{k} differs between ranks"
        if v.is_floating_point() and not torch.equal(v, r0["initial"][k]):
            changed = True
    assert changed, "training steps must change the weights"


def _budget_worker(rank: int, world: int, port: int, root: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import time

    from retinaunet.layout import TaskPaths
    from retinaunet.plans import load_plans
    from retinaunet.training.distributed import init_distributed, shutdown
    from retinaunet.training.trainer import Trainer, TrainOptions

    if rank == 1:  # this process's clock runs three times as fast: alone it would stop far earlier than rank 0
        real = time.perf_counter
        time.perf_counter = lambda: 3.0 * real()
    ctx = init_distributed("cpu")
    paths = TaskPaths(Path(root))
    plans = load_plans(paths.plans).override("training.epochs", 2).override("training.batches_per_epoch", 400)
    trainer = Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                 sweep=False, max_minutes=0.004), ctx)
    trainer.fit()
    torch.save({"history": trainer.history, "state": trainer.model.state_dict()},
               os.path.join(out_dir, f"budget{rank}.pt"))
    shutdown(ctx)


def test_a_budget_in_minutes_stops_every_rank_at_the_same_step(task, tmp_path):  # noqa: F811 - the fixture
    """``--max-minutes`` under torchrun: rank 0's clock decides, so ranks whose clocks disagree stop together
    (on their own clocks they would leave DDP's gradient exchange at different steps and hang)."""
    paths, _ = task
    procs = mp.spawn(_budget_worker, args=(2, _free_port(), str(paths.root), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not procs.join(timeout=5):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            raise AssertionError("the two ranks did not finish within 4 minutes: they stopped at different steps")
    r0 = torch.load(tmp_path / "budget0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "budget1.pt", weights_only=False)
    batches = [h["batches"] for h in r0["history"]]
    assert 1 <= batches[0] < 400 and len(batches) == 1  # stopped by the budget, mid-epoch
    assert batches == [h["batches"] for h in r1["history"]]
    assert [h["seconds"] for h in r0["history"]] == [h["seconds"] for h in r1["history"]]  # rank 0's clock
    assert r0["history"][0]["seconds"] >= 60 * 0.004
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), f"{k} differs between ranks"
