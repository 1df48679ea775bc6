"""`perceptclip train` (= `python train.py`): `HfArgumentParser` over the recipe's model / data / experiment /
training dataclasses, defaults from `--config <yaml>`, overrides from the command line; then the experiment and a
printed summary."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

TRAIN_PROG = "perceptclip train"


NAME = "train"
HELP = "train and test with a recipe (configs/*.yaml); --help lists every option"
DESCRIPTION = "Train PerceptCLIP with the paper's recipe (same as `python train.py`)."
PASSTHROUGH = True  # every argument goes to the recipe's own parser (HfArgumentParser), --help included


def run(args: argparse.Namespace) -> int:
    return main(args.argv, prog=TRAIN_PROG)


def summary(results: dict, output_dir: str) -> str:
    from ..run_layout import LOG_FILE, RESULTS_FILE, RESULTS_TABLE

    agg = results["aggregate"]
    shown = ", ".join(f"{k.upper()} {v:.3f}" for k, v in agg.items() if k in ("srcc", "plcc", "accuracy"))
    lines = [
        f"PerceptCLIP · {results['dataset']} ({results['task']}) · {len(results['splits'])} split(s)",
        f"  test on held-out content ({results['metric_aggregation']}): {shown}",
        f"  results: {output_dir}/{RESULTS_FILE}, {output_dir}/{RESULTS_TABLE}; log: {output_dir}/{LOG_FILE}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Train; expected failures (bad recipe, missing data, unreachable backbone) are one line and exit status 2."""
    from ..errors import run_command

    return run_command(prog or "train.py", lambda: train(argv, prog))


def train(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..run_layout import split_model_dir
    from ..scoring.scorer import PerceptScorer
    from ..tasks import score_meaning
    from ..training.experiment import run_experiment
    from ..training.recipe import parse_args
    from .common import load_plugins

    load_plugins()  # installed task / dataset plugins, as `perceptclip train` loads them
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_args, data_args, experiment, training_args = parse_args(argv, prog=prog)
    results = run_experiment(model_args, data_args, experiment, training_args)
    if training_args.process_index == 0:
        print(summary(results, training_args.output_dir))
        print(f"  trained with {training_args.world_size} process(es) on {training_args.device.type}")
        model_dir = split_model_dir(training_args.output_dir, data_args.splits[0])
        if experiment.save_model and model_dir.exists():
            print(f"  model: {model_dir}  (AutoModel.from_pretrained(..., trust_remote_code=True))")
            scorer = PerceptScorer.from_pretrained(str(model_dir))
            print(f"  its output: {score_meaning(scorer.config)}")
            print("  a few held-out images scored by the saved model:")
            for row in score_examples(scorer, data_args):
                predicted = f"score {row['score']:+.4f}" if "score" in row else f"predicted {row.get('label')}"
                print(f"    {row['image']:<28} label {row['true_label']:.2f}  {predicted}")
    return 0


def score_examples(scorer, data_args, count: int = 3) -> list[dict]:
    """Score a few held-out images with the saved model, as a user would (`PerceptScorer`)."""
    test = data_args.split_parts(data_args.dataset[0], data_args.data_dir[0], data_args.splits[0])["test"]
    rows = test.select(range(min(count, len(test))))
    predictions = scorer(list(rows["image_path"]))
    return [
        {"image": Path(path).name, "true_label": label, **prediction}
        for path, label, prediction in zip(rows["image_path"], rows["label"], predictions)
    ]
