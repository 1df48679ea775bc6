"""Training: the train.py command line, recipes, resume, multi-dataset training, 2-process CPU launch."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from perceptclip_hf.data import list_datasets
from perceptclip_hf.training.experiment import validate_arguments
from perceptclip_hf.training.recipe import DataArguments, ModelArguments, load_config, parse_args
from perceptclip_hf.training.task import build_model, resolve_task
from perceptclip_hf.training.trainer import prepare_splits, stage2_heads, train_one, training_arguments
from tests.helpers.cli import perceptclip, run_python, tiny_recipe, train_command, two_cpu_processes
from tests.helpers.datasets import make_koniq
from tests.helpers.models import BLOCK_PACKAGE, accumulating_arguments
from tests.helpers.paths import QUICKSTART, REPO_ROOT


def test_train_py_runs_evaluates_saves_and_the_model_loads_as_remote_code(tmp_path, trained_run):
    stdout = (trained_run / "stdout.txt").read_text()  # the session's `python train.py` run (tests/conftest.py)
    assert "test on held-out content (median): SRCC" in stdout and "score" in stdout
    run = trained_run / "run"
    results = json.loads((run / "results.json").read_text())
    assert {"srcc", "plcc", "krcc"} <= set(results["aggregate"]) and results["metric_aggregation"] == "median"
    assert results["splits"][0]["test"]["srcc"] == results["aggregate"]["srcc"]
    assert (run / "results.md").read_text().count("|") > 10
    model_dir = run / "split_0" / "model"
    run_python(
        BLOCK_PACKAGE
        + f"""
from transformers import AutoModel
model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
assert type(model).__name__ == "PerceptCLIPForRegression", type(model)
"""
    )
    # ... and the run publishes as it is (train.py's layout): the card carries its metrics.
    publish = perceptclip(  # = python push_to_hub.py (tests/test_architecture.py)
        "push", "--run-dir", run, "--repo-id", "me/quickstart", "--dry-run", tmp_path / "hub", cwd=tmp_path
    )
    assert publish.returncode == 0, publish.stderr[-3000:]
    from huggingface_hub import ModelCard

    reported = {r.metric_type: r.metric_value for r in ModelCard.load(tmp_path / "hub" / "README.md").data.eval_results}
    assert reported["srcc"] == pytest.approx(results["aggregate"]["srcc"])
    # ... and embeds the run's summary report, whose files come along.
    assert (tmp_path / "hub" / "report" / "training_curves.png").read_bytes() == (
        run / "report" / "training_curves.png"
    ).read_bytes()
    assert "](report/training_curves.png)" in (tmp_path / "hub" / "README.md").read_text()


def test_command_line_overrides_the_recipe_and_unknown_keys_are_named(tmp_path, synthetic_dir):
    config = tiny_recipe(tmp_path, synthetic_dir)
    model_args, data_args, _, training_args = parse_args(
        ["--config", str(config), "--learning_rate", "0.0003", "--splits", "0", "1"]
    )
    assert training_args.learning_rate == 3e-4 and data_args.splits == [0, 1]
    assert model_args.adaptation == "full" and training_args.num_train_epochs == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [koniq10k]\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="bad.yaml.*learning_rat"):
        load_config(bad)


def test_every_registry_dataset_has_a_valid_recipe():
    """Each config parses into the dataclasses and passes validation; every registry dataset is covered."""
    covered = set()
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        model_args, data_args, experiment, training_args = parse_args(["--config", str(path)])
        task = validate_arguments(model_args, data_args, experiment)
        covered.update(data_args.dataset, experiment.cross_eval_dataset)
        if path.stem not in ("quickstart", "agiqa3k_cpu"):  # the paper's recipe
            assert model_args.base_model_name_or_path == "openai/clip-vit-large-patch14"
            assert (model_args.adaptation, model_args.lora_r, model_args.lora_alpha) == ("lora", 16, 8)
            assert experiment.learning_rates == [5e-5, 1e-4, 5e-4, 1e-3]
            assert (training_args.weight_decay, training_args.per_device_train_batch_size) == (1e-4, 32)
            assert (training_args.num_train_epochs, experiment.early_stopping_patience) == (40, 12)
            expected_loss = {"quality": "plcc", "memorability": "mse", "emotion": "cross_entropy"}[task.name]
            assert model_args.loss == expected_loss
    assert covered == set(list_datasets())


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tmp_path, synthetic_dir):
    config = tiny_recipe(
        tmp_path,
        synthetic_dir,
        num_train_epochs=5,
        save_total_limit=10,
        max_train_samples=320,
        output_dir=str(tmp_path / "whole"),
    )
    whole = subprocess.run(
        train_command(config, "--save_model", "false"), capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(config, "--save_model", "false", "--output_dir", str(run_dir)),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 400
    checkpoint = None
    while time.time() < deadline and process.poll() is None:
        done = [
            c
            for c in run_dir.glob("split_0/lr_*/checkpoint-*")
            if (c / "trainer_state.json").exists() and (c / "rng_state.pth").exists() and (c / "scheduler.pt").exists()
        ]
        if done:
            checkpoint = done[0]
            time.sleep(0.5)
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    process.wait()
    assert checkpoint is not None and process.returncode == -signal.SIGKILL, "the run was not interrupted"
    assert not (run_dir / "results.json").exists()

    resumed = subprocess.run(
        train_command(config, "--save_model", "false", "--output_dir", str(run_dir), "--resume", "true"),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The log (appended to) says where training went on: a checkpoint the kill left whole, at its epoch.
    resumed_from = re.findall(
        r"resuming from (checkpoint-\d+) \(epoch ([\d.]+), step (\d+)\)", (run_dir / "train.log").read_text()
    )
    assert len(resumed_from) == 1, resumed_from
    name, epoch, step = resumed_from[0]
    state = json.loads((run_dir / "split_0" / checkpoint.parent.name / name / "trainer_state.json").read_text())
    assert (float(epoch), int(step)) == (pytest.approx(state["epoch"], abs=1e-3), state["global_step"])
    assert name == checkpoint.name or int(step) > int(checkpoint.name.split("-")[1])
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())["splits"][0]
    got = json.loads((run_dir / "results.json").read_text())["splits"][0]
    for part in ("validation", "test"):
        for name, value in expected[part].items():
            assert got[part][name] == pytest.approx(value, abs=1e-6), (part, name)


def test_multi_dataset_training_has_one_head_per_dataset_and_stage2_keeps_the_encoder(tmp_path, synthetic_dir):
    make_koniq(tmp_path / "koniq", n=40)
    model_args = ModelArguments(
        **{k: v for k, v in load_config(QUICKSTART).items() if k in ModelArguments.__dataclass_fields__}
    )
    data_args = DataArguments(
        dataset=["synthetic_iqa", "koniq10k"],
        data_dir=[str(synthetic_dir), str(tmp_path / "koniq")],
        max_train_samples=64,
        eval_crops=1,
        test_crops=2,
        resize_short=48,
    )
    task = resolve_task(data_args.dataset)
    torch.manual_seed(0)
    model = build_model(model_args, task)
    assert set(model.heads) == {"synthetic_iqa", "koniq10k"}
    data = prepare_splits(task, data_args, 0, model, seed=0)
    heads_in_train = set(data["train"].with_format(None)["head"])
    assert heads_in_train == {0, 1}
    from transformers import TrainingArguments

    base = TrainingArguments(
        output_dir=str(tmp_path / "multi"),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    args = training_arguments(base, tmp_path / "multi", task, 1e-3, multi=True)
    _, validation, test = train_one(model, task, data, args, patience=3, resume=False)
    assert {"synthetic_iqa_srcc", "koniq10k_srcc", "srcc"} <= set(test)
    encoder = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    heads = {k: v.clone() for k, v in model.heads.state_dict().items()}
    stage2_heads(model, task, data, args, epochs=1, output_dir=tmp_path / "multi")
    assert all(torch.equal(encoder[k], v) for k, v in model.backbone.state_dict().items())
    changed = [k for k, v in model.heads.state_dict().items() if not torch.equal(heads[k], v)]
    assert any(k.startswith("synthetic_iqa.") for k in changed) and any(k.startswith("koniq10k.") for k in changed)


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not installed")
def test_two_cpu_processes_reach_the_metrics_of_one(tmp_path, synthetic_dir):
    """DDP on CPU (gloo), the launch line from hf-notes; the global batch is kept equal (2 × 16 = 32)."""
    # MSE (the mean of 2 × 16 per-sample gradients is the 32-batch gradient) and training to convergence: the two
    # runs then differ only by data order and augmentation draws.
    config = tiny_recipe(tmp_path, synthetic_dir, num_train_epochs=12, max_train_samples=None, loss="mse")
    one = subprocess.run(
        train_command(config, "--output_dir", str(tmp_path / "one"), "--save_model", "false"),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [
        "accelerate",
        "launch",
        *two_cpu_processes(),
        str(REPO_ROOT / "train.py"),
        "--config",
        str(config),
        "--output_dir",
        str(tmp_path / "two"),
        "--save_model",
        "false",
        "--per_device_train_batch_size",
        "16",
    ]
    two = subprocess.run(launch, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout and "1 process(es)" in one.stdout
    srcc = [json.loads((tmp_path / name / "results.json").read_text())["aggregate"]["srcc"] for name in ("one", "two")]
    print("SRCC one process, two processes:", srcc)
    assert abs(srcc[0] - srcc[1]) < 0.02, srcc


def test_multi_dataset_emotion_heads_of_different_sizes(tmp_path):
    """EmoSet (8 classes) + EmotionROI (6): per-sample routing pads the smaller head with -inf; each head's loss
    and metrics see only its own classes (paper sec. 5.4, emotion model)."""
    from perceptclip_hf.training.trainer import make_compute_metrics
    from tests.helpers.datasets import make_emoset, make_emotionroi

    make_emoset(tmp_path / "emoset", per_class=3)
    make_emotionroi(tmp_path / "roi", per_class=4)
    model_args = ModelArguments(
        vision_config=load_config(QUICKSTART)["vision_config"], adaptation="full", head_hidden_sizes=[16]
    )
    task = resolve_task(["emoset", "emotionroi"])
    assert task.head_sizes == [8, 6] and task.head_positive_classes == [(0, 1, 2, 3), (3, 5)]
    model = build_model(model_args, task).eval()
    data = prepare_splits(
        task,
        DataArguments(dataset=task.datasets, data_dir=[str(tmp_path / "emoset"), str(tmp_path / "roi")]),
        0,
        model,
        0,
    )
    from transformers import default_data_collator

    batch = default_data_collator([data["train"][i] for i in range(len(data["train"]))])
    with torch.no_grad():
        out = model(**batch)
    roi = batch["head"] == 1
    assert torch.isinf(out.logits[roi, 6:]).all() and torch.isfinite(out.logits[~roi]).all()
    expected = torch.stack(
        [
            torch.nn.functional.cross_entropy(out.logits[batch["head"] == 0], batch["labels"][~roi]),
            torch.nn.functional.cross_entropy(out.logits[roi, :6], batch["labels"][roi]),
        ]
    ).mean()
    assert torch.allclose(out.loss, expected)
    from transformers import EvalPrediction

    metrics = make_compute_metrics(task)(
        EvalPrediction(out.logits.numpy(), (batch["labels"].numpy(), batch["head"].numpy()))
    )
    assert {"emoset_accuracy", "emotionroi_accuracy", "emotionroi_accuracy_2class", "accuracy"} <= set(metrics)


def test_multi_dataset_results_hold_each_heads_metrics_and_their_median():
    from perceptclip_hf.training.experiment import per_dataset_results

    task = resolve_task(["koniq10k", "livec"])
    splits = [
        {"split": k, "test": {"koniq10k_srcc": 0.9 + k / 100, "livec_srcc": 0.8 - k / 100, "srcc": 0.85}}
        for k in range(3)
    ]
    koniq = per_dataset_results("koniq10k", splits, task)
    assert koniq["splits"][2] == {"split": 2, "test": {"srcc": 0.92}}
    assert koniq["aggregate"]["srcc"] == pytest.approx(0.91) and koniq["metric_aggregation"] == "median"
    assert per_dataset_results("livec", splits, task)["aggregate"]["srcc"] == pytest.approx(0.79)


def test_cross_dataset_evaluation_scores_the_other_datasets_test_split(quality_dir, tmp_path):
    """A trained model on another benchmark's test split: SRCC of its 15-crop scores against that split's MOS."""
    from scipy.stats import spearmanr

    from perceptclip_hf.data import benchmark_splits, load_benchmark
    from perceptclip_hf.evaluation.benchmark import cross_dataset_evaluation
    from perceptclip_hf.scoring.scorer import PerceptScorer

    make_koniq(tmp_path / "koniq", n=30)
    metrics = cross_dataset_evaluation(str(quality_dir), "koniq10k", str(tmp_path / "koniq"), split=0)
    test = benchmark_splits("koniq10k", load_benchmark("koniq10k", tmp_path / "koniq"), 0)["test"]
    scores = [r["score"] for r in PerceptScorer.from_pretrained(quality_dir, resize_short=384)(test)]
    assert len(test) == 6 and metrics["srcc"] == pytest.approx(spearmanr(scores, test["label"])[0])


def write_checkpoint(folder: Path, step: int, weights: str = "model.safetensors") -> Path:
    """The files `Trainer._save_checkpoint` writes, in its order (weights, optimizer, scheduler, RNG, state)."""
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"head.weight": torch.randn(4, 3)}, folder / weights)
    torch.save({"state": {0: {"exp_avg": torch.randn(4, 3)}}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_skips_a_checkpoint_left_incomplete_by_a_kill(tmp_path, caplog):
    """A kill during a save leaves `checkpoint-N` without `trainer_state.json` (the Trainer writes it last), a kill
    inside `torch.save` a truncated file, and a kill while the rotation deletes an older folder (`shutil.rmtree`, in
    no set order) a `trainer_state.json` without weights: resuming must take the newest complete one and say why it
    skipped each newer one. (`get_last_checkpoint` would pick the broken folder: the resume test's flake.)"""
    from transformers.trainer_utils import get_last_checkpoint

    from perceptclip_hf.training.trainer import last_complete_checkpoint

    write_checkpoint(tmp_path / "checkpoint-5", 5)
    write_checkpoint(tmp_path / "checkpoint-15", 15)
    broken = {  # step: (what a kill left, the cause the warning names)
        30: (lambda f: (f / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        28: (lambda f: truncate(f / "trainer_state.json"), "trainer_state.json is missing or unreadable"),
        25: (lambda f: (f / "model.safetensors").unlink(), "weights are missing (model.safetensors)"),
        22: (lambda f: truncate(f / "model.safetensors"), "model.safetensors is corrupt or truncated"),
        20: (lambda f: (f / "optimizer.pt").write_bytes(b""), "optimizer.pt is missing, empty or truncated"),
        18: (lambda f: truncate(f / "scheduler.pt"), "scheduler.pt is missing, empty or truncated"),
        17: (lambda f: (f / "rng_state.pth").unlink(), "rng_state.pth is missing"),
    }
    for step, (damage, _) in broken.items():
        damage(write_checkpoint(tmp_path / f"checkpoint-{step}", step))
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-30")
    with caplog.at_level("WARNING", logger="perceptclip_hf.training.trainer"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-15")
    warnings = {record.getMessage().split(":")[0].split("/")[-1]: record.getMessage() for record in caplog.records}
    for step, (_, cause) in broken.items():
        assert cause in warnings[f"checkpoint-{step}"], (step, warnings.get(f"checkpoint-{step}"))
    assert "checkpoint-15" not in warnings and "checkpoint-5" not in warnings

    # An adapter-only checkpoint (a PEFT model's `adapter_model.safetensors`) is complete; a sharded one is
    # complete only with every shard its index names.
    write_checkpoint(tmp_path / "checkpoint-40", 40, weights="adapter_model.safetensors")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-40")
    sharded = write_checkpoint(tmp_path / "checkpoint-50", 50, weights="model-00001-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-40")
    from safetensors.torch import save_file

    save_file({"b": torch.zeros(2)}, sharded / "model-00002-of-00002.safetensors")
    assert last_complete_checkpoint(tmp_path) == str(sharded)
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_trainer_step_on_our_model_with_gradient_accumulation_is_sgd_on_the_mean_micro_batch_plcc(
    tmp_path, tiny_clip_base
):
    """`transformers.Trainer` on a PerceptCLIPForRegression (PLCC loss), 2 micro-batches of 4, one SGD step: the
    parameter update must be `-lr * mean(grad of each micro-batch's PLCC loss)` and the reported loss the mean of
    the micro-batch losses, both computed here with plain autograd on a copy of the model. PLCC is a per-batch
    statistic: if the model claimed `accepts_loss_kwargs`, the Trainer would pass `num_items_in_batch` and stop
    dividing by the accumulation steps (update and loss twice as large)."""
    import copy

    from transformers import Trainer

    from tests.helpers.models import trained_like

    model = trained_like(tiny_clip_base, task="quality", lora_dropout=0.0, head_dropout=0.0)
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.arange(8, dtype=torch.float32) * 0.5 + torch.rand(8, generator=generator)  # distinct values
    dataset = [{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)]

    seen: list[list[float]] = []  # the labels of each micro-batch, in the order the Trainer fed them
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["labels"].tolist()), with_kwargs=True
    )
    lr = 0.5
    args = accumulating_arguments(
        tmp_path,
        max_steps=1,
        learning_rate=lr,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        seed=0,
    )
    result = Trainer(model=model, args=args, train_dataset=dataset).train()

    assert len(seen) == 2 and sorted(v for batch in seen for v in batch) == pytest.approx(sorted(labels.tolist()))
    trainable = {name: p for name, p in reference.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("heads.") for name in trainable)
    reference.train()
    micro_losses, micro_grads = [], []
    for batch in seen:
        rows = [int(torch.argmin((labels - value).abs())) for value in batch]
        loss = plcc_reference(reference(pixel_values=pixels[rows]).logits.reshape(-1), labels[rows])
        micro_losses.append(loss.item())
        micro_grads.append(torch.autograd.grad(loss, list(trainable.values())))
    assert result.training_loss == pytest.approx(sum(micro_losses) / 2, rel=1e-5)

    trained = dict(model.named_parameters())
    moved = 0.0
    for (name, before), g0, g1 in zip(trainable.items(), *micro_grads):
        expected = before.detach() - lr * (g0 + g1) / 2
        torch.testing.assert_close(trained[name].detach(), expected, atol=1e-6, rtol=1e-4, msg=name)
        moved = max(moved, (expected - before).abs().max().item())
    assert moved > 1e-3  # the step is large enough to tell a mean from a sum
    for name, param in reference.named_parameters():
        if not param.requires_grad:
            assert torch.equal(trained[name], param), name  # the frozen backbone is untouched


def plcc_reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1 - Pearson r) / 2, re-typed here (not the package's loss)."""
    pred, target = pred - pred.mean(), target - target.mean()
    return (1 - (pred * target).sum() / (pred.norm() * target.norm())) / 2
