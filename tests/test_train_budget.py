"""A training-time budget as a plan input (rud_plan --train-minutes); extending a finished run (--resume --epochs)."""

from __future__ import annotations

import pytest
from retinaunet.planning.measure import measure_step_seconds
from retinaunet.planning.pipeline import plan_task, summary_table
from retinaunet.planning.schedule import MIN_BATCHES_PER_EPOCH, apply_train_minutes, budget_schedule

from retinaunet.model_folder import load_checkpoint
from retinaunet.plans import load_plans, make_test_plans
from retinaunet.toy import Toy2DConfig, write_toy_task
from retinaunet.training.trainer import Trainer, TrainingError, TrainOptions
from tests.test_trainer import task  # noqa: F401 - the fixture


def test_budget_fills_the_minutes_with_measured_steps():
    plans = make_test_plans(dim=2)
    plans.override("training.epochs", 10)
    epochs, batches, reason = budget_schedule(plans, 2.0, 0.1, "cpu")  # 1200 steps
    assert (epochs, batches) == (10, 120)
    assert "1200 steps at 0.100 s" in reason and "cpu" in reason
    epochs, batches, reason = budget_schedule(plans, 0.5, 0.5, "cpu")  # 60 steps: epochs of >= 20 batches
    assert (epochs, batches) == (60 // MIN_BATCHES_PER_EPOCH, 20) and "fewer than the planned 10" in reason
    assert budget_schedule(plans, 0.01, 5.0, "cpu")[:2] == (1, 1)  # shorter than a step: one step
    with pytest.raises(ValueError, match="--train-minutes must be positive"):
        budget_schedule(plans, 0, 0.1, "cpu")
    plans.reasons["training"] = "the planner's five minutes"
    apply_train_minutes(plans, 2.0, 0.1, "cpu")
    assert plans.training.batches_per_epoch == 120
    assert plans.reasons["training"].endswith("without a budget: the planner's five minutes")


def test_measured_step_is_a_real_step():
    seconds, device = measure_step_seconds(make_test_plans(dim=2), steps=1)
    assert 0 < seconds < 60 and device == "cpu"


def test_rud_plan_train_minutes_sizes_the_schedule(data_root):
    write_toy_task("shapes", data_root, config=Toy2DConfig(size=64, radius=8, hole_radius=2, num_train=6,
                                                            num_test=0), progress=False)
    default, _ = plan_task(101)
    budgeted, written = plan_task(101, train_minutes=0.5)
    assert written
    saved = load_plans(data_root / "Task101_ToyShapes" / "plans.json")
    steps = saved.training.epochs * saved.training.batches_per_epoch
    assert saved.reasons["training"].startswith("--train-minutes 0.5: ")
    wanted = int(saved.reasons["training"].split(": ", 1)[1].split(" steps at ")[0])
    per_step = float(saved.reasons["training"].split(" steps at ")[1].split(" s ")[0])
    # the printed step time is rounded to 1 ms: the steps lie between what its bounds give
    assert 30 / (per_step + 0.0005) - 1 <= wanted <= 30 / max(per_step - 0.0005, 1e-6) + 1
    assert 0 <= steps - wanted < saved.training.epochs  # ceil per epoch
    assert "--train-minutes 0.5" in summary_table(budgeted)
    assert {k: v for k, v in saved.to_dict().items() if k not in ("training", "reasons")} == \
        {k: v for k, v in default.to_dict().items() if k not in ("training", "reasons")}  # only the schedule


def _train(paths, plans, **kw):
    return Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                              sweep=False, **kw)).fit()


def test_resume_with_more_epochs_extends_a_finished_run(task):  # noqa: F811 - the fixture
    paths, plans = task
    one = plans.copy().override("training.epochs", 1)
    _train(paths, one)
    last = paths.fold_dir("retina_unet", "2d", 0) / "checkpoint_last.pt"
    first = load_checkpoint(last)
    assert first["epoch"] == 1
    longer = plans.copy().override("training.epochs", 2).override("training.learning_rate", 3e-4)
    trainer = Trainer(paths, longer, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                  sweep=False, resume=True))
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == 3e-4  # the new plan's lr, not the checkpoint's
    extended = load_checkpoint(last)
    assert extended["epoch"] == 2 and len(extended["history"]) == 2
    assert extended["history"][0] == first["history"][0]
    assert extended["plans"]["training"]["epochs"] == 2
    with pytest.raises(TrainingError, match="pass --epochs N with N >= 2"):
        _train(paths, one, resume=True)  # fewer epochs than trained: refused, nothing touched
    assert load_checkpoint(last)["epoch"] == 2


def test_rud_train_resume_keeps_the_runs_own_schedule(task):  # noqa: F811 - the fixture
    """`rud_train --epochs 1 --batches-per-epoch 3` then `--resume --epochs 2`: the extension trains epochs of
    3 batches, not plans.json's 2; naming --batches-per-epoch with --resume changes it."""
    from retinaunet.training.cli import main as train_main

    paths, _ = task
    assert load_plans(paths.plans).training.batches_per_epoch == 2
    common = ["0", "-t", paths.name, "--workers", "0", "--no-test", "--no-sweep", "--device", "cpu"]
    assert train_main(common + ["--epochs", "1", "--batches-per-epoch", "3"]) == 0
    last = paths.fold_dir("retina_unet", "2d", 0) / "checkpoint_last.pt"
    assert load_checkpoint(last)["plans"]["training"]["batches_per_epoch"] == 3
    assert train_main(common + ["--resume", "--epochs", "2"]) == 0
    extended = load_checkpoint(last)
    assert extended["epoch"] == 2 and extended["plans"]["training"]["batches_per_epoch"] == 3
    assert train_main(common + ["--resume"]) == 0  # no --epochs: the run's 2 (plans.json says 2 as well)
    assert train_main(common + ["--resume", "--epochs", "3", "--batches-per-epoch", "4"]) == 0
    assert load_checkpoint(last)["plans"]["training"]["batches_per_epoch"] == 4
    assert load_plans(paths.plans).training.batches_per_epoch == 2  # plans.json untouched


def test_max_minutes_stops_mid_epoch_and_extends_a_run_on_the_clock(task):  # noqa: F811 - the fixture
    """A budget of training minutes stops at the step that spends it, mid-epoch; the short epoch is validated and
    kept; a resume with the same budget trains nothing, a larger one trains on to it."""
    paths, plans = task
    long_epochs = plans.copy().override("training.epochs", 3).override("training.batches_per_epoch", 400)
    long_epochs.override("training.val_interval", 5)
    budget = 0.002  # 0.12 s: a few steps, far fewer than the 400 of an epoch
    trainer = Trainer(paths, long_epochs, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                       sweep=False, max_minutes=budget))
    trainer.fit()
    last = paths.fold_dir("retina_unet", "2d", 0) / "checkpoint_last.pt"
    state = load_checkpoint(last)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    first = state["history"][0]
    assert 1 <= first["batches"] < 400 and first["seconds"] >= 60 * budget
    assert first["val_ap"] is not None  # the last epoch is validated although val_interval is 5
    assert trainer.seconds_left() <= 0 and len(trainer.best) == 1
    again = Trainer(paths, long_epochs, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                     sweep=False, resume=True, max_minutes=budget))
    again.fit()
    assert load_checkpoint(last)["history"] == state["history"]  # spent: nothing trained
    more = Trainer(paths, long_epochs, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                    sweep=False, resume=True, max_minutes=2 * budget))
    more.fit()
    extended = load_checkpoint(last)
    assert extended["history"][0] == first and extended["epoch"] == 2
    assert sum(e["seconds"] for e in extended["history"]) >= 60 * 2 * budget
    assert extended["history"][1]["batches"] < 400
    with pytest.raises(TrainingError, match="--max-minutes must be positive"):
        Trainer(paths, long_epochs, TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False,
                                                 sweep=False, resume=True, max_minutes=0)).fit()


def test_without_a_budget_every_epoch_is_whole(task):  # noqa: F811 - the fixture
    paths, plans = task
    trainer = Trainer(paths, plans.copy().override("training.epochs", 2),
                      TrainOptions(fold=0, device="cpu", num_workers=0, predict_test=False, sweep=False))
    trainer.fit()
    batches = plans.training.batches_per_epoch
    assert [e["batches"] for e in trainer.history] == [batches, batches]
    assert trainer.seconds_left() == float("inf")


def test_lr_drop_at_a_share_of_the_epochs_or_of_the_budget(task):  # noqa: F811 - the fixture
    paths, plans = task
    drop = plans.copy().override("training.epochs", 2).override("training.batches_per_epoch", 2) \
        .override("training.lr_drop_at", 0.5).override("training.learning_rate", 1e-3)
    _train(paths, drop)
    history = load_checkpoint(paths.fold_dir("retina_unet", "2d", 0) / "checkpoint_last.pt")["history"]
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-4])  # epoch 2 starts at half the schedule
    trainer = Trainer(paths, drop, TrainOptions(fold=0, device="cpu", num_workers=0, max_minutes=1.0))
    trainer.history = [{"seconds": 20.0}]  # a third of the budget spent before this epoch
    assert trainer.lr_at(0, 0, 9.0) == pytest.approx(1e-3)  # 29 s of 60: full rate
    assert trainer.lr_at(0, 0, 10.0) == pytest.approx(1e-4)  # from 30 s on (half the budget): dropped tenfold
    constant = Trainer(paths, plans, TrainOptions(fold=0, device="cpu", num_workers=0, max_minutes=1.0))
    assert constant.lr_at(5, 0, 1e6) == plans.training.learning_rate  # no drop planned: the constant rate
