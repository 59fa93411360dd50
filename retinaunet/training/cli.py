"""``rud_train FOLD -t TASK``: train one cross-validation fold (or all five in turn)."""

from __future__ import annotations

import argparse

from loguru import logger

from retinaunet.cli_errors import run_command
from retinaunet.layout import TaskPaths
from retinaunet.plans import apply_overrides, load_plans
from retinaunet.splits import num_folds
from retinaunet.threads import set_threads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_train",
        description="Train a detector on one fold of the cross-validation: the folds of the task's "
                    "splits.json (a converter may write ten), else five stratified folds of 60/20/20 "
                    "train/val/test. Settings come from the task's plans.json; the flags override single entries. "
                    "After every epoch the val cases are predicted whole and the 5 best epochs by mAP@0.1 are "
                    "kept; at the end the val cases are predicted again with the planned ensemble (those epochs x "
                    "mirroring; a CPU plan of costly cases limits it) to sweep the inference settings, and the "
                    "fold's test cases are predicted with the chosen settings and evaluated. Several GPUs: "
                    "torchrun --nproc_per_node N $(which rud_train) 0 -t TASK.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("fold", help="fold 0-4 (0..K-1 when splits.json holds K folds), or 'all' for every fold in turn")
    p.add_argument("-t", "--task", default=None, help="task number or name (default $RUD_TASK)")
    p.add_argument("--model", default="retina_unet",
                   help="registered model (retina_unet, retina_net, ...); see retinaunet.models.available_models()")
    p.add_argument("--plan", default=None,
                   help="configuration of plans.json to train: 2d, 2dc, 3d, 3dlr (default: its default); each has "
                        "its own model folder models/<model>_<plan>")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default from plans.json)")
    p.add_argument("--batches-per-epoch", type=int, default=None,
                   help="training batches per epoch (default from plans.json)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="a budget of training time: stop once the run's training steps (all its epochs, those "
                        "before a --resume included; not validation) reach M minutes, in the middle of an epoch "
                        "if need be (that last epoch is shorter, validated and kept like any). The epochs stay the "
                        "cap (plans.json's, a resumed run's own, or --epochs): to extend a finished run to M "
                        "minutes in all, give --resume --epochs K with K above what M minutes can train. Under "
                        "torchrun all processes stop at the same step, on rank 0's clock")
    p.add_argument("--workers", type=int, default=None,
                   help="augmentation worker processes; 0 augments in the main process (default from plans)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (and the default cap on --workers); default: the cores not busy "
                        "with other work, so a concurrent job slows this one by its fair share only")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint (weights, optimiser, epoch, "
                        "random states and history): ends as an uninterrupted run would. With --epochs K above "
                        "the run's epochs it extends a finished run to K epochs: Adam's state carries on at the "
                        "plan's constant learning rate, and the best epochs, the sweep and the test prediction "
                        "are redone at the end. The run keeps its own epochs and batches per epoch unless "
                        "--epochs / --batches-per-epoch are given")
    p.add_argument("--force", action="store_true",
                   help="delete an existing run of this fold and start over (without it an existing run is "
                        "never touched)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 mixed precision (default: on with CUDA, off on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (expert; slow first step)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and patch sampling")
    p.add_argument("--no-test", action="store_true", help="skip predicting the fold's test cases at the end")
    p.add_argument("--pretrained", default=None, metavar="MODEL_FOLDER",
                   help="start from another model's weights (a model folder models/<model>_<plan>, its first "
                        "fold's best checkpoint, or a checkpoint file): weights of the same name and shape are "
                        "loaded, the rest initialised; the lists go to the fold's pretrained.json")
    p.add_argument("--no-sweep", action="store_true",
                   help="skip the sweep at the end: no raw val predictions kept, inference settings stay as "
                        "planned (rud_sweep can choose them later)")
    p.add_argument("--sweep-metric", choices=("map", "cpm", "patient"), default="map",
                   help="validation metric the sweep maximises: mAP@0.1, FROC CPM or patient-level AP")
    p.add_argument("--faster-ensemble", action="store_true",
                   help="let the sweep choose fewer checkpoints or no test-time mirroring than planned, when that "
                        "holds the validation metric (default: the planned ensemble stays)")
    p.add_argument("--override", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change plan entries for this run, e.g. training.learning_rate=3e-4 (changes results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("rud_train", lambda: train(args))


def train(args: argparse.Namespace) -> None:
    """Train the folds the parsed arguments name."""
    from retinaunet.training.distributed import init_distributed, shutdown
    from retinaunet.training.trainer import Trainer, TrainOptions

    paths = TaskPaths.from_task(args.task)
    n_folds = num_folds(paths)
    if args.fold == "all":
        folds = list(range(n_folds))
    elif args.fold.isdigit() and 0 <= int(args.fold) < n_folds:
        folds = [int(args.fold)]
    else:
        raise ValueError(f"fold must be 0-{n_folds - 1} or 'all', got '{args.fold}'")
    plans = load_plans(paths.plans, args.plan)
    apply_overrides(plans, args.override)
    if args.epochs is not None:
        plans.override("training.epochs", args.epochs)
    if args.batches_per_epoch is not None:
        plans.override("training.batches_per_epoch", args.batches_per_epoch)
    given = {o.split("=", 1)[0].strip() for o in args.override}  # a resumed run keeps what this call does not name
    keep = tuple(key for key, flag in (("epochs", args.epochs), ("batches_per_epoch", args.batches_per_epoch))
                 if args.resume and flag is None and f"training.{key}" not in given)
    set_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        for fold in folds:
            opts = TrainOptions(fold=fold, model=args.model, device=args.device, num_workers=args.workers,
                                resume=args.resume, force=args.force, amp=args.amp, compile=args.compile,
                                seed=args.seed, predict_test=not args.no_test, sweep=not args.no_sweep,
                                sweep_metric=args.sweep_metric, pretrained=args.pretrained,
                                faster_ensemble=args.faster_ensemble, keep_run_schedule=keep,
                                max_minutes=args.max_minutes)
            if ctx.enabled and args.device is None and __import__("torch").cuda.is_available():
                opts.device = f"cuda:{ctx.local_rank}"
            Trainer(paths, plans, opts, ctx).fit()
    finally:
        shutdown(ctx)
    logger.info("training done")
