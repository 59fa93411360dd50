"""The trainer of one cross-validation fold, read top to bottom as named steps.

prepare (splits, model folder, network, optimiser, resume) -> per epoch: train_epoch -> validate ->
end_epoch (history, kept best checkpoints, last checkpoint, curves) -> tune (the val cases predicted with
the ensemble of the best epochs and mirroring, their raw views kept, the inference settings swept on
them) -> finish (test cases predicted with the ensemble and the chosen settings, then evaluated).
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from loguru import logger
from tqdm import tqdm

from retinaunet import store
from retinaunet.dataset import list_cases
from retinaunet.evaluation.ap import average_precision, mean_over_classes
from retinaunet.layout import TaskPaths
from retinaunet.model_folder import (
    FoldFolder,
    ModelFolder,
    ModelFolderError,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from retinaunet.models import build_model
from retinaunet.plans import Plans
from retinaunet.progress import hidden
from retinaunet.threads import recheck_threads
from retinaunet.training import trained_seconds
from retinaunet.training.checkpoint import rng_state, set_rng_state
from retinaunet.training.curves import plot_curves
from retinaunet.training.distributed import DistContext, barrier, rank0_value
from retinaunet.training.loader import make_train_loader, resolve_workers
from retinaunet.training.splits import load_or_create_splits
from retinaunet.training.step import LossModule, train_step


class TrainingError(RuntimeError):
    """Training cannot go on; the message says what to try."""


@dataclass
class TrainOptions:
    """What ``rud_train`` may change; everything else comes from the plans."""

    fold: int
    model: str = "retina_unet"
    device: str | None = None
    num_workers: int | None = None
    resume: bool = False
    force: bool = False
    amp: bool | None = None
    compile: bool = False
    seed: int = 0
    predict_test: bool = True
    max_nonfinite: int = 10
    sweep: bool = True  # keep the raw val predictions and choose the inference settings on them
    sweep_metric: str = "map"
    faster_ensemble: bool = False  # the sweep may choose fewer checkpoints or no mirroring than planned
    pretrained: str | None = None  # model folder or checkpoint whose fitting weights start the training
    # stop once the run's training steps (every epoch of its history, a resumed run's earlier ones included; not
    # validation) reach this many minutes, mid-epoch if need be; the epochs of the plans stay the cap
    max_minutes: float | None = None
    # schedule keys ("epochs", "batches_per_epoch") a resumed run keeps from its checkpoint instead of the plans
    # given (rud_train: those its command line does not name)
    keep_run_schedule: tuple[str, ...] = ()


def pick_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def without_stale_cases(classes: dict[str, set[int]], raw_cases: set[str] | None, pre_dir: Path
                        ) -> dict[str, set[int]]:
    """``classes`` less the preprocessed cases that are no longer in the raw data (with a warning), so a case
    deleted from the dataset never enters splits or training. ``raw_cases`` None keeps every case."""
    if raw_cases is None:
        return classes
    stale = [c for c in classes if c not in raw_cases]
    if stale:
        logger.warning(f"{pre_dir}: {len(stale)} preprocessed case(s) are not in the raw data any more and are "
                       f"left out ({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}); delete their files "
                       "to silence this")
    return {c: v for c, v in classes.items() if c in raw_cases}


def check_fold_dir(fold_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to start where a run would replace earlier results.

    Any file in the fold folder (checkpoints, kept epochs, log, predictions) counts as an earlier run:
    without ``force`` it is never touched. ``resume`` needs the last checkpoint; without it the run
    would start at epoch 1 and replace the kept epochs, so it is refused too.
    """
    artefacts = sorted(p for p in fold_dir.rglob("*") if p.is_file()) if fold_dir.is_dir() else []
    last = FoldFolder(fold_dir).last_checkpoint
    if resume:
        if not last.is_file():
            kept = f" ({len(artefacts)} file(s) there are kept)" if artefacts else ""
            raise TrainingError(f"{last}: not found, nothing to resume{kept}; train without --resume "
                                "into an empty fold, or pass --force (without --resume) to start this fold over")
        return
    if artefacts and not force:
        raise TrainingError(f"{fold_dir} already holds a training run ({artefacts[0].relative_to(fold_dir)} and "
                            f"{len(artefacts) - 1} more file(s)): pass --resume to continue it or --force to "
                            "delete it and start over")


class Trainer:
    """Trains fold ``opts.fold`` of a task with the task's plans (see module docstring)."""

    def __init__(self, paths: TaskPaths, plans: Plans, opts: TrainOptions, ctx: DistContext | None = None):
        self.paths, self.plans, self.opts = paths, plans, opts
        self.ctx = ctx or DistContext()
        self.device = pick_device(opts.device)
        self.amp = self.device.type == "cuda" if opts.amp is None else opts.amp
        self.pre_dir = paths.preprocessed(plans.plan_name)
        self.folder = ModelFolder(paths.model_dir(opts.model, plans.plan_name))
        self.fold = self.folder.fold(opts.fold)
        self.fold_dir = self.fold.path
        self.history: list[dict] = []
        self.best: list[dict] = []
        self.start_epoch = 0
        self._log_sink: int | None = None

    # ----------------------------------------------------------------------------------------- prepare
    def prepare(self) -> None:
        classes = store.case_classes(self.pre_dir)
        if not classes:
            raise TrainingError(f"{self.pre_dir}: no preprocessed cases; run rud_preprocess -t {self.paths.name}")
        raw = {c.name for c in list_cases(self.paths.root, "train")} if self.paths.images_tr.is_dir() else None
        classes = without_stale_cases(classes, raw, self.pre_dir)
        if self.ctx.is_main:
            splits = load_or_create_splits(self.paths, classes, seed=self.opts.seed)
        barrier(self.ctx)
        if not self.ctx.is_main:
            splits = load_or_create_splits(self.paths, classes, seed=self.opts.seed)
        if not 0 <= self.opts.fold < len(splits):
            raise TrainingError(f"{self.paths.splits}: fold {self.opts.fold} does not exist "
                                f"(folds 0..{len(splits) - 1})")
        self.split = splits[self.opts.fold]
        last = self.fold.last_checkpoint
        if self.ctx.is_main:
            check_fold_dir(self.fold_dir, resume=self.opts.resume, force=self.opts.force)
            if self.opts.force and not self.opts.resume and self.fold_dir.exists():
                shutil.rmtree(self.fold_dir)
            try:
                self.folder.write_plans(self.plans, self.paths.dataset_file)
            except ModelFolderError as err:
                raise TrainingError(str(err)) from None
            self.fold_dir.mkdir(parents=True, exist_ok=True)
            self._log_sink = logger.add(self.fold.log, level="INFO")
        barrier(self.ctx)
        if self.opts.max_minutes is not None and self.opts.max_minutes <= 0:
            raise TrainingError(f"--max-minutes must be positive, got {self.opts.max_minutes:g}")
        torch.manual_seed(self.opts.seed)
        np.random.seed(self.opts.seed)
        self.model = build_model(self.opts.model, self.plans).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.plans.training.learning_rate,
                                          weight_decay=self.plans.training.weight_decay)
        if self.opts.resume and last.exists():
            self._resume(last)
        elif self.opts.pretrained:
            from retinaunet.io import write_json
            from retinaunet.training.pretrained import load_pretrained

            report = load_pretrained(self.model, self.opts.pretrained)
            if self.ctx.is_main:
                write_json(report, self.fold_dir / "pretrained.json")
        module: torch.nn.Module = LossModule(self.model)
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
        if self.opts.compile:
            module = torch.compile(module)
        self.module = module
        logger.info(f"fold {self.opts.fold}: {len(self.split['train'])} train, {len(self.split['val'])} val, "
                    f"{len(self.split['test'])} test cases; model {self.opts.model}, plan {self.plans.plan_name}, "
                    f"device {self.device}, amp {self.amp}, {self.ctx.world_size} process(es)")

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best = list(state["best"])
        set_rng_state(state["rng"])
        self._keep_run_schedule(path, state.get("plans", {}).get("training", {}))
        epochs, lr = self.plans.training.epochs, self.plans.training.learning_rate
        if self.start_epoch > epochs:
            raise TrainingError(f"{path}: the run has trained {self.start_epoch} epochs, more than the {epochs} "
                                f"asked for; pass --epochs N with N >= {self.start_epoch} to extend it, or --force "
                                "to start over")
        # the plan's lr and weight decay (an --override given with --resume acts from here)
        self._set_groups(lr=lr, weight_decay=self.plans.training.weight_decay)
        before = int(state.get("plans", {}).get("training", {}).get("epochs", epochs))
        if epochs > before:
            t = self.plans.training
            rate = f"the constant lr {lr:g}" if t.lr_drop_at is None else \
                f"lr {lr:g}, x {t.lr_drop_factor:g} from {t.lr_drop_at:g} of the new schedule"
            logger.info(f"extending {path} from {before} to {epochs} epochs (trained: {self.start_epoch}): Adam's "
                        f"moments carry on at {rate}; the kept best epochs, the sweep and the "
                        "test prediction are redone at the end")
        logger.info(f"resumed {path} at epoch {self.start_epoch}")

    def _keep_run_schedule(self, path: Path, run: dict) -> None:
        """A resumed run keeps its own epochs and batches per epoch (e.g. those of an earlier ``--epochs 4
        --batches-per-epoch 20``) for the keys of ``keep_run_schedule``: it ends as the uninterrupted run would."""
        kept = {}
        for key in self.opts.keep_run_schedule:
            value = run.get(key)
            if value is not None and int(value) != getattr(self.plans.training, key):
                kept[key] = int(value)
        if kept:
            self.plans = self.plans.copy()  # the caller's plans (shared by the folds of one call) stay as given
            self.plans.training = replace(self.plans.training, **kept)
            logger.info(f"{path}: the run's own " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kept.items())
                        + " kept (plans.json differs; --epochs / --batches-per-epoch change them)")

    # ------------------------------------------------------------------------------------------- epochs
    def fit(self) -> dict:
        """Run every remaining epoch, then the test prediction; returns a summary."""
        self.prepare()
        try:
            epochs = self.plans.training.epochs
            for epoch in range(self.start_epoch, epochs):
                if self.seconds_left() <= 1e-6:  # spent (to the float sum's rounding)
                    logger.info(f"the budget of {self.opts.max_minutes:g} min of training is spent "
                                f"({self.trained_seconds() / 60:.2f} min in {epoch} epochs): no more epochs")
                    break
                stats = self.train_epoch(epoch)
                val_ap = None
                interval = self.plans.training.val_interval
                last = epoch + 1 == epochs or stats["budget_spent"]
                if self.ctx.is_main and ((epoch + 1) % interval == 0 or last):
                    val_ap = self.validate()
                self.end_epoch(epoch, stats, val_ap)
                barrier(self.ctx)
                if stats["budget_spent"]:
                    logger.info(f"the budget of {self.opts.max_minutes:g} min of training is spent: stopped after "
                                f"{stats['batches']} of the {self.plans.training.batches_per_epoch} batches of "
                                f"epoch {epoch + 1} ({self.trained_seconds() / 60:.2f} min in all)")
                    break
            summary = {"fold": self.opts.fold, "best": self.best, "history": self.history}
            if self.ctx.is_main and self.opts.sweep:
                summary["sweep"] = self.tune()
            if self.ctx.is_main and self.opts.predict_test:
                summary["test"] = self.finish()
            return summary
        finally:
            if self._log_sink is not None:
                logger.remove(self._log_sink)
                self._log_sink = None

    def trained_seconds(self) -> float:
        return trained_seconds(self.history)

    def seconds_left(self) -> float:
        """Seconds of training the ``max_minutes`` budget leaves (infinite without one)."""
        if self.opts.max_minutes is None:
            return float("inf")
        return 60.0 * self.opts.max_minutes - self.trained_seconds()

    def _loader_seed(self, epoch: int) -> int:
        return (self.opts.seed * 100_003 + epoch * 1_009 + self.ctx.rank * 7) % (2 ** 31)

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        n_batches = self.plans.training.batches_per_epoch
        setting = self.opts.num_workers if self.opts.num_workers is not None else self.plans.training.num_workers
        workers = resolve_workers(setting, self.device.type)
        loader = make_train_loader(self.pre_dir, self.split["train"], self.plans, num_workers=workers,
                                   seed=self._loader_seed(epoch))
        sums: dict[str, float] = defaultdict(float)
        left = self.seconds_left()  # a budget in minutes ends the epoch at the step that spends it
        before = self.trained_seconds()
        done, skipped, bad_in_row, wait, start = 0, 0, 0, 0.0, time.perf_counter()
        budgeted = self.opts.max_minutes is not None

        def elapsed() -> float:  # several processes read rank 0's clock: they stop at the same step
            seconds = time.perf_counter() - start
            return rank0_value(seconds, self.ctx, self.device) if budgeted else seconds

        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{self.plans.training.epochs}",
                   disable=hidden(not self.ctx.is_main), leave=False, dynamic_ncols=True)
        try:
            for _ in bar:
                now = elapsed()
                if done + skipped and now >= left:  # the last step spent the budget
                    break
                recheck_threads()  # other work started or stopped: the fair share follows
                if self.plans.training.lr_drop_at is not None:
                    self._set_lr(self.lr_at(epoch, done + skipped, now, before))
                t0 = time.perf_counter()
                batch = next(loader)
                wait += time.perf_counter() - t0
                result = train_step(self.module, self.optimizer, batch, self.device, self.ctx, self.amp)
                if result.skipped:
                    skipped += 1
                    bad_in_row += 1
                    logger.warning(f"epoch {epoch + 1}: non-finite loss, step skipped")
                    if bad_in_row >= self.opts.max_nonfinite:
                        raise TrainingError(
                            f"{bad_in_row} steps in a row had a NaN/inf loss: lower the learning rate "
                            "(--override training.learning_rate=3e-5), check the images' intensities and "
                            "plans.json 'normalization', or try without --amp")
                    continue
                bad_in_row = 0
                done += 1
                for k, v in result.losses.items():
                    sums[k] += v
                bar.set_postfix({k: f"{sums[k] / done:.3f}" for k in sums if k != "loss"} | {
                    "loss": f"{sums['loss'] / done:.3f}"})
        finally:
            close = getattr(loader, "close", None)
            if close is not None:
                close()
        total = elapsed()
        return {"losses": {k: v / max(done, 1) for k, v in sums.items()}, "skipped": skipped,
                "seconds": total, "data_wait": wait / max(total, 1e-9), "batches": done + skipped,
                "budget_spent": total >= left, "lr": self.optimizer.param_groups[0]["lr"]}

    def lr_at(self, epoch: int, step: int, elapsed: float, before: float | None = None) -> float:
        """The plan's learning rate at ``step`` of ``epoch`` (``elapsed`` seconds into it, ``before`` seconds of
        training before it: the history's when not given): with
        ``training.lr_drop_at`` set, x ``lr_drop_factor`` from that share of the schedule on, the share being the
        training seconds spent of ``--max-minutes`` when the run has a budget, else the epochs done of the
        plan's epochs. A run extended later (a larger budget or more epochs) goes back to the full rate until
        the drop's share of its new schedule."""
        t = self.plans.training
        if t.lr_drop_at is None:
            return t.learning_rate
        if self.opts.max_minutes is not None:
            spent = self.trained_seconds() if before is None else before
            share = (spent + elapsed) / (60.0 * self.opts.max_minutes)
        else:
            share = (epoch + step / t.batches_per_epoch) / t.epochs
        return t.learning_rate * (t.lr_drop_factor if share >= t.lr_drop_at else 1.0)

    def _set_lr(self, lr: float) -> None:
        if lr != self.optimizer.param_groups[0]["lr"]:
            logger.info(f"learning rate {self.optimizer.param_groups[0]['lr']:g} -> {lr:g} "
                        f"({self.trained_seconds() / 60:.2f} min of training before this epoch)")
            self._set_groups(lr=lr)

    def _set_groups(self, **values: float) -> None:
        """Set these optimiser settings (lr, weight_decay) in every parameter group."""
        for group in self.optimizer.param_groups:
            group.update(values)

    @torch.no_grad()
    def validate(self) -> float:
        """mAP at IoU 0.1 of the val cases, predicted whole (one view, this epoch's weights)."""
        from retinaunet.inference.pipeline import PredictionRun

        self.model.eval()
        run = PredictionRun([self.model], self.plans, self.device, predictor_options={"mirror": False})
        dim = self.plans.data_dim
        preds, gts = [], []
        for case in self.split["val"]:
            data, props = store.load_case(self.pre_dir, case)
            preds.append(run.case(data, props))
            gts.append(store.ground_truth(props, dim))
        self.model.train()
        if not gts:
            return 0.0
        ap = average_precision([p.boxes for p in preds], [p.scores for p in preds], [p.labels for p in preds],
                               [g[0] for g in gts], [g[1] for g in gts], self.plans.num_classes, (0.1,))
        value = float(mean_over_classes(ap)[0])
        return value if np.isfinite(value) else 0.0

    def end_epoch(self, epoch: int, stats: dict, val_ap: float | None) -> None:
        record = {"epoch": epoch + 1, "losses": stats["losses"], "val_ap": val_ap, "skipped": stats["skipped"],
                  "seconds": stats["seconds"], "data_wait": stats["data_wait"], "batches": stats["batches"],
                  "lr": stats["lr"]}
        self.history.append(record)
        if not self.ctx.is_main:
            return
        if val_ap is not None:
            self._keep_if_best(epoch + 1, val_ap)
        state = checkpoint_state(self.opts.model, self.plans, self.model, epoch + 1,
                                 optimizer=self.optimizer.state_dict(), rng=rng_state(), history=self.history,
                                 best=self.best)
        save_checkpoint(state, self.fold.last_checkpoint)
        plot_curves(self.history, self.fold.curves,
                    title=f"{self.paths.name} {self.opts.model} {self.plans.plan_name} fold {self.opts.fold}")
        losses = ", ".join(f"{k} {v:.4f}" for k, v in stats["losses"].items())
        ap = f", val mAP@0.1 {val_ap:.4f}" if val_ap is not None else ""
        logger.info(f"epoch {epoch + 1}: {losses}{ap}; {stats['seconds']:.1f}s, "
                    f"{100 * stats['data_wait']:.0f}% waiting for data")

    def _keep_if_best(self, epoch: int, val_ap: float) -> None:
        keep = self.plans.training.keep_best
        if len(self.best) >= keep and val_ap <= min(b["val_ap"] for b in self.best):
            return
        name = self.fold.epoch_file(epoch)
        save_checkpoint(checkpoint_state(self.opts.model, self.plans, self.model, epoch, val_ap=val_ap),
                        self.fold_dir / name)
        self.best.append({"epoch": epoch, "val_ap": val_ap, "file": name})
        self.best.sort(key=lambda b: (-b["val_ap"], b["epoch"]))
        for dropped in self.best[keep:]:
            (self.fold_dir / dropped["file"]).unlink(missing_ok=True)
        self.best = self.best[:keep]
        self.fold.write_best(self.best)

    # --------------------------------------------------------------------------------------------- tune
    def tune(self) -> dict:
        """Keep the raw val predictions of the kept epochs x mirroring, and sweep the inference settings."""
        from retinaunet.inference.tune import sweep_folds, write_raw_predictions

        if not self.split["val"]:
            logger.warning(f"fold {self.opts.fold}: no val cases; inference settings stay as planned")
            return {}
        write_raw_predictions(self.folder, self.opts.fold, self.pre_dir, self.split["val"], self.fold.val_raw,
                              self.device)
        result, _ = sweep_folds(self.folder, [self.opts.fold], self.opts.sweep_metric,
                                faster_ensemble=self.opts.faster_ensemble)
        summary = {"metric": result.metric, "planned": result.planned_value, "chosen": result.value,
                   "values": result.chosen, "cases": result.num_cases, "decision": result.decision["chosen"]}
        pooled = [f for f in self.folder.available_folds() if any(self.folder.fold(f).val_raw.glob("*.npz"))]
        if len(pooled) > 1 and self.opts.fold in pooled:  # more folds' val cases to decide on: their pooled choice
            result, path = sweep_folds(self.folder, pooled, self.opts.sweep_metric,
                                       faster_ensemble=self.opts.faster_ensemble)
            summary["pooled"] = {"folds": pooled, "cases": result.num_cases, "decision": result.decision["chosen"],
                                 "values": result.chosen, "file": str(path)}
        return summary

    # ------------------------------------------------------------------------------------------- finish
    def finish(self) -> dict:
        """Predict the fold's test cases with the best epochs and the fold's inference settings (a sweep's
        chosen values, else the planned ones), export and evaluate them."""
        from retinaunet.evaluation.evaluate import evaluate_cases, write_results
        from retinaunet.evaluation.io import load_ground_truth, load_predictions
        from retinaunet.inference.pipeline import PredictionRun

        cases = self.split["test"]
        if not cases:
            return {}
        plans, source = self.folder.tuned_plans([self.opts.fold])
        models, plans = self.folder.load_models([self.opts.fold], self.device, plans=plans)
        out = self.fold.test_predictions
        if out.exists():
            shutil.rmtree(out)
        run = PredictionRun(models, plans, self.device, out_dir=out)
        for case in tqdm(cases, desc=f"fold {self.opts.fold} test", leave=False):
            run.case(*store.load_case(self.pre_dir, case))
        run.finish()
        gt = load_ground_truth(self.paths.labels_tr, cases)
        preds = load_predictions(out, list(gt), next(iter(gt.values())).boxes.shape[1] // 2)
        metrics, curves = evaluate_cases(preds, gt, self.plans.num_classes, (0.1,), self.plans.class_names)
        write_results(metrics, curves, self.fold.test_evaluation)
        logger.info(f"fold {self.opts.fold} test: mAP@0.1 {metrics['mAP']['0.1']}, "
                    f"{len(models)} checkpoint(s) x {len(run.predictor.views)} mirroring(s), settings of "
                    f"{source or 'the plans'}")
        return metrics
