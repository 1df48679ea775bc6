"""Command line of `train.py`: `HfArgumentParser` over the model / data / experiment / training dataclasses,
defaults from `--config <yaml>`, overrides from the command line; then the protocol and a printed summary."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .protocol import run_experiment
from .training import DataArguments, ExperimentArguments, ModelArguments

DATACLASSES = (ModelArguments, DataArguments, ExperimentArguments, TrainingArguments)


def load_config(path: str | Path) -> dict:
    """A recipe YAML as a flat dict of dataclass fields; unknown keys are an error naming the file."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}.")
    known = {name for cls in DATACLASSES for name in cls.__dataclass_fields__}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; see `python train.py --help`.")
    return values


def parse_args(argv: list[str] | None = None):
    """(model, data, experiment, training) arguments: YAML defaults, then command-line overrides."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(DATACLASSES)
    parser.add_argument("--config", help="YAML recipe (configs/<dataset>.yaml); command-line options override it.")
    if known.config:
        parser.set_defaults(**load_config(known.config))
    outputs = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    return outputs[: len(DATACLASSES)]  # the rest is the namespace holding `config`


def summary(results: dict, output_dir: str) -> str:
    agg = results["aggregate"]
    shown = ", ".join(f"{k.upper()} {v:.3f}" for k, v in agg.items() if k in ("srcc", "plcc", "accuracy"))
    lines = [
        f"PerceptCLIP · {results['dataset']} ({results['task']}) · {len(results['splits'])} split(s)",
        f"  test on held-out content ({results['metric_aggregation']}): {shown}",
        f"  results: {output_dir}/results.json, {output_dir}/results.md",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_args, data_args, experiment, training_args = parse_args(argv)
    results = run_experiment(model_args, data_args, experiment, training_args)
    if training_args.process_index == 0:
        print(summary(results, training_args.output_dir))
        print(f"  trained with {training_args.world_size} process(es) on {training_args.device.type}")
        model_dir = Path(training_args.output_dir) / f"split_{data_args.splits[0]}" / "model"
        if experiment.save_model and model_dir.exists():
            print(f"  model: {model_dir}  (AutoModel.from_pretrained(..., trust_remote_code=True))")
            print("  a few held-out images scored by the saved model (a PLCC-trained score is relative: it ranks "
                  "images, its scale is not the label's):")
            for row in score_examples(model_dir, data_args):
                print(f"    {row['image']:<28} label {row['label']:.2f}  score {row['score']:+.4f}")
    return 0


def score_examples(model_dir: Path, data_args: DataArguments, count: int = 3) -> list[dict]:
    """Score a few held-out images with the saved model, as a user would (`PerceptScorer`)."""
    from .data import benchmark_splits, load_benchmark
    from .inference import PerceptScorer

    name, data_dir = data_args.dataset[0], data_args.data_dir[0]
    test = benchmark_splits(name, load_benchmark(name, data_dir), data_args.splits[0], data_dir=data_dir)["test"]
    rows = test.select(range(min(count, len(test))))
    scorer = PerceptScorer.from_pretrained(str(model_dir))
    predictions = scorer(list(rows["image_path"]))
    return [{"image": Path(path).name, "label": label, **prediction}
            for path, label, prediction in zip(rows["image_path"], rows["label"], predictions)]
