"""``rud_consolidate -t TASK``: one ensemble of folds per configuration, and the choice between configurations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from retinaunet.inference.sweep import METRICS

from retinaunet.layout import LayoutError
from retinaunet.model_folder import ModelFolderError
from retinaunet.plans import PlansError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_consolidate",
        description="For each trained configuration (models/<model>_<plan>): pool the raw validation "
                    "predictions of its folds, choose one set of inference settings for the ensemble of folds "
                    "(sweep.json in the model folder, used by rud_predict for those folds) and record its folds "
                    "and checkpoints (ensemble.json). Then compare the configurations by their validation metric "
                    "on the cases they share, try the ensemble of the best two (WBC over both), and write the "
                    "choice with its reason to models/consolidation.json.")
    p.add_argument("-t", "--task", default=None, help="task number or name (default $RUD_TASK)")
    p.add_argument("--model", default="retina_unet", help="model name (default retina_unet)")
    p.add_argument("--plans", nargs="+", default=None,
                   help="configurations to consolidate and compare (default: every trained one)")
    p.add_argument("--metric", choices=METRICS, default="map",
                   help="validation metric: mAP@0.1, FROC CPM or patient-level AP")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retinaunet.inference.consolidate import consolidate_task

    try:
        record = consolidate_task(args.task, args.model, args.plans, args.metric)
    except (ModelFolderError, LayoutError, PlansError, ValueError, FileNotFoundError) as err:
        print(f"rud_consolidate: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 1
    for name, entry in record["configurations"].items():
        print(f"{name:<5} folds {entry['folds']}, {entry['checkpoints']} checkpoint(s): {record['metric']} "
              f"{entry['value']:.4f} on {record['common_cases']} shared validation case(s)")
    if "ensemble" in record:
        print(f"ensemble {' + '.join(record['ensemble']['plans'])}: {record['ensemble']['value']:.4f}")
    print(f"choice: {' + '.join(record['choice'])}: {record['why']}\nwritten: {record['file']}")
    return 0
