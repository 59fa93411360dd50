"""``rud_predict``: predict a folder of new images with a trained model folder.

Three layers: :func:`main` only parses arguments; :func:`predict_folder` does a whole run and is
callable from tests and notebooks; :class:`retinaunet.inference.pipeline.PredictionRun` does the work.
A run needs only the model folder (its copy of plans.json and the checkpoints), not the training data.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from loguru import logger
from retinaunet.inference.export import CSV_NAME, output_files
from retinaunet.inference.gallery import GALLERY_CASES, GALLERY_NAME, gallery_panel, write_gallery
from retinaunet.inference.pipeline import PredictionRun
from tqdm import tqdm

from retinaunet.cli_errors import run_command
from retinaunet.convert.writer import load_case_names
from retinaunet.coordinates import CaseCoordinates
from retinaunet.dataset import MODALITY_PATTERN
from retinaunet.io import IMAGE_SUFFIXES, read_case, read_header, read_image, read_json, strip_image_suffix
from retinaunet.layout import TaskPaths
from retinaunet.model_folder import ModelFolder, ModelFolderError
from retinaunet.plans import Plans, load_plans
from retinaunet.threads import recheck_threads, set_threads

__all__ = ["InputError", "OutputExistsError", "find_input_cases", "main", "parse_shard", "predict_folder",
           "resolve_model_dir", "shard_cases"]


class InputError(RuntimeError):
    """An input folder that cannot be predicted; the message names the file and why."""


class OutputExistsError(RuntimeError):
    """An output file exists and ``overwrite`` was not asked for."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard '{text}' must look like i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def shard_cases(cases: Sequence[str], index: int, count: int) -> list[str]:
    """Every ``count``-th case of the sorted names, starting at ``index``: shards are disjoint and cover all."""
    return sorted(cases)[index::count]


def find_input_cases(input_dir: str | os.PathLike, plans: Plans) -> dict[str, list[Path]]:
    """Cases of an input folder in the raw naming (``<case>_0000.nii.gz`` ...): {case: modality files}.

    Checks names and that every case has exactly the plan's modalities; raises :class:`InputError`
    with the first problem (one line naming the file).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: input folder not found")
    n_mod = plans.num_modalities
    files: dict[str, dict[int, Path]] = {}
    for f in sorted(input_dir.iterdir()):
        if not f.is_file() or f.name.startswith(".") or not f.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        match = MODALITY_PATTERN.match(strip_image_suffix(f.name))
        if match is None:
            raise InputError(f"{f}: name must be <case>_<4-digit modality>, e.g. case001_0000.nii.gz; rename it")
        mod = int(match.group("mod"))
        if mod >= n_mod:
            raise InputError(f"{f}: modality {mod} but the model takes {n_mod} modality(ies) (_0000.."
                             f"_{n_mod - 1:04d}); remove the file")
        files.setdefault(match.group("case"), {})[mod] = f
    if not files:
        raise InputError(f"{input_dir}: no images named <case>_0000.nii.gz (or .nrrd, .mha ...)")
    for case, mods in sorted(files.items()):
        for mod in range(n_mod):
            if mod not in mods:
                name = plans.modalities.get(str(mod), "")
                raise InputError(f"{input_dir / f'{case}_{mod:04d}.nii.gz'}: missing modality {mod} ({name}) of "
                                 f"case '{case}'; add the file")
    return {case: [mods[m] for m in range(n_mod)] for case, mods in sorted(files.items())}


def check_case_files(case: str, files: Sequence[Path], plans: Plans) -> None:
    """Headers only: readable, the plan's number of dims, modalities on one grid."""
    reference = None
    for f in files:
        geom, _ = read_header(f)  # ReadError names the file
        if geom.dim != plans.data_dim:
            raise InputError(f"{f}: image is {geom.dim}D but the model was trained on {plans.data_dim}D images")
        if reference is None:
            reference = geom
        elif (diff := reference.same_as(geom)) is not None:
            raise InputError(f"{f}: {diff} of modality 0; resample it onto modality 0's grid")


def _preprocess(images, geometry, plans, case):
    from retinaunet.preprocessing.preprocess import preprocess_case  # the preprocessing room owns this step

    return preprocess_case(images, geometry, plans, case=case)


def predict_folder(model_dir: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   folds: Sequence[int] | None = None, *, mirror: bool | None = None, shard: tuple[int, int] = (0, 1),
                   device: str | torch.device = "cpu", consolidation: str | None = None, save_seg: bool = False,
                   save_boxes: bool = False, overwrite: bool = False, batch_size: int | None = None,
                   progress: bool = True, resume: bool = False, overrides: Sequence[str] = (),
                   planned_settings: bool = False, save_instances: bool = False,
                   chosen_by: str | None = None) -> list[Path]:
    """Predict every case of ``input_dir`` (this shard's share) into ``output_dir``; returns the JSON paths.

    Writes ``<case>.json`` per case (see :mod:`retinaunet.inference.export`), optional NIfTI masks, and
    ``predictions.csv`` over all prediction JSONs in ``output_dir``; each JSON records under ``settings`` the
    inference settings used and where they came from. The settings are the model folder's plans with a sweep's chosen
    values on top (``planned_settings``: without them), then ``overrides`` (``key=value``, ``inference.`` may be left
    out), then ``mirror`` / ``consolidation`` when given. Nothing is overwritten unless
    ``overwrite``: every output is checked before the first case runs. Shards of one run share the
    CSV (each shard rewrites it from the JSONs present when it ends).

    ``overwrite`` removes the run's CSV and gallery before the first case, so an interrupted run never
    leaves those of an earlier model beside its new JSONs. ``resume`` continues an interrupted run: cases
    whose JSON exists (it is written last) are kept, the others predicted, and the CSV and gallery
    written as an uninterrupted run writes them.

    ``chosen_by``: the file that chose this configuration (``models/consolidation.json``), recorded in
    every JSON's settings.
    """
    from retinaunet.inference.settings import resolve_settings, settings_difference, settings_metadata

    if overwrite and resume:
        raise ValueError("--overwrite and --continue exclude each other: --continue keeps finished cases")
    folder, output_dir = ModelFolder(Path(model_dir)), Path(output_dir)
    plans, record = resolve_settings(folder, folds, overrides, planned=planned_settings, mirror=mirror,
                                     consolidation=consolidation)
    if chosen_by is not None:
        record["configuration_from"] = chosen_by
    cases = find_input_cases(input_dir, plans)
    names = shard_cases(list(cases), *shard)
    for name in names:
        check_case_files(name, cases[name], plans)
    def outputs(name: str) -> list[Path]:
        return output_files(output_dir, name, save_seg, save_boxes, save_instances)

    done = {name for name in names if resume and all(f.is_file() for f in outputs(name))}
    planned = [f for name in names if name not in done for f in outputs(name)]
    if shard[1] == 1:
        planned += [output_dir / CSV_NAME, output_dir / GALLERY_NAME]
    if overwrite:
        for stale in (output_dir / CSV_NAME, output_dir / GALLERY_NAME):
            stale.unlink(missing_ok=True)
    elif not resume:  # with resume, what exists of unfinished cases is the interrupted run's own
        existing = [f for f in planned if f.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise OutputExistsError(f"{existing[0]} exists{more}; pass --continue to finish an interrupted run, "
                                    "--overwrite to replace, or choose another -o")
    for name in sorted(done):  # --continue finishes the same run only
        if (diff := settings_difference(read_json(output_dir / f"{name}.json").get("settings"),
                                        settings_metadata(record, plans)["settings"])) is not None:
            raise OutputExistsError(f"{output_dir / f'{name}.json'} was written by another run ({diff}); "
                                    "--continue finishes the same run: give its settings, --overwrite to "
                                    "replace, or choose another -o")
    models, plans = folder.load_models(folds, device, plans=plans)
    run = PredictionRun(models, plans, device, out_dir=output_dir, save_seg=save_seg, save_boxes=save_boxes,
                        predictor_options={"batch_size": batch_size, "progress": progress},
                        metadata=settings_metadata(record, plans), save_instances=save_instances)
    logger.info(f"predicting {len(names) - len(done)} case(s) of {input_dir} (shard {shard[0]}/{shard[1]}"
                + (f", {len(done)} done before" if done else "") + f") with {len(models)} model(s) x "
                f"{len(run.predictor.views)} view(s) -> {output_dir}")
    # converted tasks (the model's task) and staged DICOM series (the input folder): case id -> original name
    source_names = {**load_case_names(model_dir), **load_case_names(input_dir)}
    kept, panels = [], []
    for name in tqdm(names, desc="cases", unit="case", disable=not progress):
        recheck_threads()  # other work started or stopped: the fair share follows
        if name in done:
            kept.append(output_dir / f"{name}.json")
            if shard[1] == 1 and len(panels) < GALLERY_CASES:
                doc = read_json(output_dir / f"{name}.json")
                entries = doc.get("boxes", [])
                panels.append(_panel(name, cases[name][0], [b["box"] for b in entries],
                                     [b["score"] for b in entries], [b["class"] for b in entries]))
            continue
        images, geometry = read_case(cases[name])
        data, _, props = _preprocess(images, geometry, plans, name)
        del images
        props = {**props, "case": name, **({"source_name": source_names[name]} if name in source_names else {})}
        pred = run.case(data, props)
        if shard[1] == 1 and len(panels) < GALLERY_CASES:
            order = np.argsort(-np.asarray(pred.scores), kind="stable")  # the JSON's order
            boxes = CaseCoordinates.from_props(props).to_original(pred.boxes)
            panels.append(_panel(name, cases[name][0], boxes[order], np.asarray(pred.scores)[order],
                                 np.asarray(pred.labels)[order]))
    written = sorted(kept + run.finish())
    if panels:
        write_gallery(panels, plans.class_names, output_dir / GALLERY_NAME)
    return written


def _panel(name: str, image_file: Path, boxes, scores, labels):
    """A gallery panel from boxes in the original index space, in the JSON's order (read the image again:
    the volume is not kept during prediction). Predicted and continued cases give the same panel."""
    return gallery_panel(name, read_image(image_file)[0], np.asarray(boxes, dtype=np.float64),
                         np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64))


def resolve_model_dir(task: str | None, model: str, plan: str | None) -> Path:
    """``<task>/models/<model>_<plan>``; the plan defaults to the task's plans.json, else the only one."""
    paths = TaskPaths.from_task(task)
    if plan is None and paths.plans.exists():
        plan = load_plans(paths.plans).plan_name
    if plan is None:
        found = sorted(p for p in (paths.root / "models").glob(f"{model}_*") if p.is_dir())
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise ModelFolderError(f"{paths.root / 'models'}: cannot choose the plan for model {model} "
                                   f"(found {names}); pass --plan")
        return check_model_task(found[0], paths.name)
    return check_model_task(paths.model_dir(model, plan), paths.name)


def check_model_task(model_dir: Path, task: str) -> Path:
    """``model_dir`` when its plans were made for ``task``, else ModelFolderError (a folder copied from
    another task would predict that task's classes)."""
    plans_file = ModelFolder(model_dir).plans_file
    if plans_file.is_file():
        trained_on = load_plans(plans_file).task
        if trained_on and trained_on != task:
            raise ModelFolderError(f"{model_dir}: trained on task {trained_on}, not {task}; pass -t {trained_on} "
                                   "or move the folder to its task")
    return model_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_predict",
        description="Detect objects in new images with a trained model folder. Images follow the raw naming "
                    "(<case>_0000.nii.gz, one file per modality). Writes one JSON per case (boxes in the "
                    "original image's index space and world mm) and predictions.csv.")
    p.add_argument("-t", "--task", default=None, help="task number or TaskXXX_Name (default $RUD_TASK)")
    p.add_argument("-i", "--input", required=True, type=Path, help="folder of images to predict")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the predictions")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="folds to ensemble (default: every trained fold; each adds its kept best epochs)")
    p.add_argument("--model", default="retina_unet", help="model name (default retina_unet)")
    p.add_argument("--plan", nargs="+", default=None,
                   help="plan name: 2d, 2dc, 3d, 3dlr (default: what rud_consolidate chose, in "
                        "models/consolidation.json, else the default configuration of the task's plans.json). "
                        "Several (e.g. --plan 2d 3d): each predicts into OUTPUT_DIR/<plan>/ and their boxes are "
                        "merged by WBC into OUTPUT_DIR (rud_consolidate says when that beats one configuration)")
    p.add_argument("--no-tta", action="store_true",
                   help="no test-time mirroring: 4x (2D) / 8x (3D) faster, usually a little less accurate "
                        "(default: inference.mirror, which a sweep may have chosen)")
    p.add_argument("--shard", default="0/1",
                   help="i/n: predict every n-th case (sorted names) starting at i, to split a cohort over "
                        "machines writing to the same output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--consolidation", choices=("wbc", "nms"), default=None,
                   help="merge the views' boxes by weighted box clustering (the paper's) or NMS (default: "
                        "inference.consolidation, as the sweep chose it or planned)")
    p.add_argument("--override", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change an inference setting for this run, e.g. min_score=0.3 or inference.wbc_iou=0.1 "
                        "(changes results; recorded under settings in every output JSON)")
    p.add_argument("--planned-settings", action="store_true",
                   help="use the inference settings as planned, without the values rud_sweep chose")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per forward pass (default: plans)")
    p.add_argument("--save-seg", action="store_true",
                   help="also write <case>_seg.nii.gz, the segmentation argmax (0 background, class+1)")
    p.add_argument("--save-boxes", action="store_true",
                   help="also write <case>_boxes.nii.gz, box k of the JSON painted as k+1 (for viewers)")
    p.add_argument("--save-instances", action="store_true",
                   help="also write <case>_instances.nii.gz: the voxels of box k of the JSON that the segmentation "
                        "output gives the box's class hold k+1 (models with a segmentation output)")
    p.add_argument("--dicom", action="store_true",
                   help="DICOM input only: also write per series <case>.seg.dcm (a DICOM SEG, one segment per finding) "
                        "and <case>.sr.dcm (a TID 1500 measurement report), both referencing the source series")
    p.add_argument("--operating-point", type=float, default=0.5, metavar="SCORE",
                   help="score from which a finding counts as positive: marked in report.html, and the findings "
                        "that go into the DICOM SEG and SR (default 0.5; rud_sweep proposes thresholds)")
    p.add_argument("--no-report", action="store_true",
                   help="no report.html (its thumbnails read every case's image again)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (the old predictions.csv and gallery.png are removed first)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="finish an interrupted run: keep the cases whose JSON exists, predict the rest, then "
                        "write predictions.csv and gallery.png as an uninterrupted run would")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads; default: the cores not busy with other work (a fair share beside other jobs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("rud_predict", lambda: predict_with_readers(args))


def predict_with_readers(args: argparse.Namespace) -> None:
    """The run of :func:`predict` from a folder of images or of DICOM series (staged as images while it
    runs), then what readers open: Slicer markups, report.html and with ``--dicom`` a SEG and SR per series."""
    from retinaunet.inference.dicom_input import prepare_input
    from retinaunet.inference.reader_outputs import input_cases, write_reader_outputs

    with prepare_input(args.input, _num_modalities(args)) as inputs:
        if args.dicom and not inputs.is_dicom:
            raise ValueError(f"{args.input}: --dicom needs DICOM series as input (the SEG and SR reference them)")
        predict(argparse.Namespace(**{**vars(args), "input": inputs.folder}))
        cases = shard_cases(input_cases(inputs.folder), *parse_shard(args.shard))
        write_reader_outputs(args.output, inputs, cases, args.operating_point, dicom=args.dicom,
                             report=not args.no_report)


def _num_modalities(args: argparse.Namespace) -> int:
    """Modalities the model takes (1 when its folder cannot be found yet: predict() then says why)."""
    try:
        model_dir = resolve_model_dir(args.task, args.model, (args.plan or [None])[0])
        return load_plans(ModelFolder(model_dir).plans_file).num_modalities
    except Exception:  # predict() reports what is wrong with the model folder
        return 1


def predict(args: argparse.Namespace) -> None:
    """Do the run the parsed arguments describe."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    shard = parse_shard(args.shard)
    set_threads(args.threads)
    plans, chosen_by = args.plan, None
    if not plans:
        plans, chosen_by = consolidated_choice(args.task, args.model)
    for plan in plans:
        model_dir = resolve_model_dir(args.task, args.model, plan)
        out = args.output / plan if len(plans) > 1 else args.output
        predict_folder(model_dir, args.input, out, args.folds, mirror=False if args.no_tta else None,
                       shard=shard, device=device, consolidation=args.consolidation, save_seg=args.save_seg,
                       save_boxes=args.save_boxes, overwrite=args.overwrite, batch_size=args.batch_size,
                       resume=args.resume, overrides=args.override, planned_settings=args.planned_settings,
                       save_instances=args.save_instances, chosen_by=chosen_by)
    if len(plans) > 1:
        from retinaunet.inference.plan_ensemble import merge_prediction_folders

        merge_prediction_folders([args.output / p for p in plans], args.output, chosen_by=chosen_by)


def consolidated_choice(task: str | None, model: str) -> tuple[list[str | None], str | None]:
    """The configuration(s) ``rud_consolidate`` chose for ``model`` (``models/consolidation.json``) and that
    file, when it exists and every chosen configuration is still trained; else ``[None]`` (the plans'
    default configuration) and None."""
    paths = TaskPaths.from_task(task)
    record_file = paths.root / "models" / "consolidation.json"
    if not record_file.is_file():
        return [None], None
    record = read_json(record_file)
    choice = list(record.get("choice") or [])
    if record.get("model", model) != model or not choice:
        return [None], None
    missing = [p for p in choice if not paths.model_dir(model, p).is_dir()
               or not ModelFolder(paths.model_dir(model, p)).available_folds()]
    if missing:
        logger.warning(f"{record_file} chose {' + '.join(choice)}, but {', '.join(missing)} has no trained fold; "
                       f"using the plans' default configuration (run rud_consolidate again, or pass --plan)")
        return [None], None
    logger.info(f"predicting with the configuration(s) rud_consolidate chose: {' + '.join(choice)} ({record_file}; "
                f"pass --plan to choose another)")
    return choice, str(record_file)
