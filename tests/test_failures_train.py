"""`python train.py` misused as a user runs it: each expected failure is one line `train.py: error: ...` naming the
file / option / id, the cause and the fix, exit status 2, no traceback, and nothing trained. And a run killed at
random moments (one of them inside a checkpoint write) resumes to the results of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from perceptclip_hf.recipe import build_model, parse_args, resolve_task
from perceptclip_hf.training import last_complete_checkpoint
from tests.conftest import REPO_ROOT
from tests.test_training import synthetic_dir, tiny_recipe, train_command  # noqa: F401 - `synthetic_dir` is a fixture

HUB_ID = "openai/clip-vit-base-patch32"
BAD_YAML = "dataset: [synthetic_iqa]\nsplits: [0]\nlearning_rate: 0.001\n  num_train_epochs: 2\n"

# id: the recipe (overrides of the tiny recipe, or `yaml` text), the command line after `--config <recipe>`
# ({dir}: the case's folder), the words the error line must contain, and environment variables.
MISUSES = {
    "recipe_missing": dict(config="{dir}/no_such_recipe.yaml", names=["no_such_recipe.yaml", "cannot read"]),
    "yaml_syntax_error": dict(yaml=BAD_YAML, names=["recipe.yaml", "not valid YAML", "line 4"]),
    "yaml_not_a_mapping": dict(yaml="- dataset\n- koniq10k\n", names=["recipe.yaml", "expected a mapping"]),
    "yaml_key_typo": dict(recipe={"learning_rat": 0.1}, names=["recipe.yaml", "learning_rat", "learning_rate"]),
    "yaml_value_type": dict(recipe={"per_device_train_batch_size": 2.5},
                            names=["recipe.yaml", "per_device_train_batch_size", "invalid int value: '2.5'"]),
    "yaml_list_for_one_value": dict(recipe={"learning_rate": [0.1, 0.01]},
                                    names=["recipe.yaml", "learning_rate", "expected one value"]),
    "command_line_typo": dict(args=["--learnin_rate", "0.1"], names=["unrecognized arguments: --learnin_rate"]),
    "invalid_model_option": dict(args=["--adaptation", "lorax"], names=["--adaptation", "'lorax'", "'lora'"]),
    "splits_out_of_range": dict(args=["--splits", "-1", "10"], names=["--splits [-1, 10]", "0..9"]),
    "data_dir_count": dict(args=["--data_dir", "a", "b"], names=["--data_dir", "one folder per --dataset"]),
    "data_folder_missing": dict(args=["--dataset", "koniq10k", "--data_dir", "{dir}/no_data"],
                                names=["no_data", "not found"]),
    "dataset_unknown": dict(args=["--dataset", "koniq"], names=["unknown dataset 'koniq'", "koniq10k"]),
    # The recipe's vision_config is dropped for the command line's backbone (else LoRA finds no module to adapt):
    # the Hub id is what fails. HF_HUB_OFFLINE=1 fails at once, as a machine without a network does after
    # huggingface_hub's retries (~25 s here), with the same message.
    "hub_unreachable": dict(args=["--base_model_name_or_path", HUB_ID, "--adaptation", "lora"],
                            env={"HF_HUB_OFFLINE": "1"}, info="vision_config (dropped)",
                            names=[f"--base_model_name_or_path {HUB_ID}", "cannot reach the Hugging Face Hub",
                                   f"hf download {HUB_ID}", "--base_model_name_or_path DIR"]),
    "two_backbones": dict(args=["--base_model_name_or_path", HUB_ID, "--vision_config", '{"model_type": "resnet"}'],
                          names=["--base_model_name_or_path and --vision_config", "give only one"]),
    "learning_rate_negative": dict(args=["--learning_rate", "-0.001"], names=["--learning_rate -0.001", "> 0"]),
    "learning_rate_zero": dict(args=["--learning_rate", "0"], names=["--learning_rate 0", "> 0"]),
    "learning_rate_sweep_with_zero": dict(args=["--learning_rates", "0.001", "0"],
                                          names=["--learning_rates 0.001 0", "> 0"]),
    "plcc_batch_of_one": dict(args=["--per_device_train_batch_size", "1"],
                              names=["--loss plcc", "--per_device_train_batch_size 1", "batch ≥ 2"]),
    "plcc_fewer_samples_than_a_batch": dict(args=["--max_train_samples", "8"],
                                            names=["--max_train_samples 8", "--per_device_train_batch_size 32"]),
    "no_training_steps": dict(args=["--num_train_epochs", "0"], names=["--num_train_epochs 0", "trains nothing"]),
    "validation_fraction": dict(args=["--validation_fraction", "0"], names=["--validation_fraction 0", "between"]),
    "output_dir_is_a_file": dict(args=["--output_dir", "{dir}/a_file/run"], names=["a_file is a file"]),
}


def run_misuse(case: str, folder: Path) -> subprocess.CompletedProcess:
    spec = MISUSES[case]
    folder.mkdir(parents=True)
    (folder / "a_file").write_text("not a folder")
    recipe = folder / "recipe.yaml"
    if "yaml" in spec:
        recipe.write_text(spec["yaml"])
    else:  # the quickstart recipe; its data folder does not exist: a refusal must come before loading (generating)
        tiny_recipe(folder, folder / "no_data", **spec.get("recipe", {}))
    config = spec.get("config", str(recipe)).replace("{dir}", str(folder))
    arguments = [argument.replace("{dir}", str(folder)) for argument in spec.get("args", [])]
    return subprocess.run(train_command(Path(config), *arguments), capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300, env={**os.environ, **spec.get("env", {})})


@pytest.fixture(scope="module")
def misuse_runs(request, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The selected cases' `train.py` runs, two at a time (each costs ~5 s of imports)."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_misuse_is_one_line_naming_the_cause"]
    root = tmp_path_factory.mktemp("misuses")
    with ThreadPoolExecutor(2) as pool:
        runs = {case: pool.submit(run_misuse, case, root / case) for case in selected}
    return {case: (run.result(), root / case) for case, run in runs.items()}


@pytest.mark.parametrize("case", list(MISUSES))
def test_misuse_is_one_line_naming_the_cause(case, misuse_runs):
    result, folder = misuse_runs[case]
    spec = MISUSES[case]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("train.py: error: "), result.stderr[-3000:]
    missing = [words for words in spec["names"] if words not in message]
    assert not missing, (missing, message)
    assert spec.get("info", "") in result.stderr
    # Nothing trained, nothing loaded: no output folder, and the synthetic data folder was not generated.
    assert not (folder / "run").exists() and not (folder / "no_data").exists()
    assert (folder / "a_file").is_file()


def test_command_line_backbone_replaces_the_recipes_vision_config(tmp_path, tiny_clip_base, caplog):
    """The quickstart recipe sets a random backbone (`vision_config`); `--base_model_name_or_path` on the command
    line wins, so `--adaptation lora` adapts the pretrained backbone; the recipe's other values stay."""
    config = tiny_recipe(tmp_path, tmp_path / "data")
    with caplog.at_level("INFO", logger="perceptclip_hf.recipe"):
        model_args, data_args, _, training_args = parse_args(["--config", str(config), "--base_model_name_or_path",
                                                              str(tiny_clip_base), "--adaptation", "lora"])
    assert model_args.vision_config is None and model_args.base_model_name_or_path == str(tiny_clip_base)
    assert f"replaces {config}'s vision_config (dropped)" in caplog.text
    assert model_args.head_hidden_sizes == [64, 32] and training_args.num_train_epochs == 2
    model = build_model(model_args, resolve_task(data_args.dataset))
    assert any("lora_A" in name for name, _ in model.named_parameters())


# train.py as the killed runs run it: Trainer.train starts the clock; KILL_AFTER=<s> kills the process that long
# after, KILL_AT_SAVE=<n> inside the n-th checkpoint write (after its weights, optimizer and scheduler, before its
# RNG state and trainer_state.json); TIMELINE=<file> records when each checkpoint was complete and when the process
# ended. Each step sleeps PACE s, so that the training, not the start-up, sets the timeline (no effect on results).
WRAPPER = """
import atexit, json, os, runpy, signal, sys, threading, time
import transformers

Trainer, env, clock, saves = transformers.Trainer, os.environ, {{}}, [0]
train, training_step = Trainer.train, Trainer.training_step
save_checkpoint, save_rng_state = Trainer._save_checkpoint, Trainer._save_rng_state


def note(event):
    if env.get("TIMELINE") and "start" in clock:
        with open(env["TIMELINE"], "a") as timeline:
            timeline.write(json.dumps([event, time.monotonic() - clock["start"]]) + "\\n")


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def timed_train(self, *args, **kwargs):
    clock["start"] = time.monotonic()
    if "KILL_AFTER" in env:
        timer = threading.Timer(float(env["KILL_AFTER"]), kill)
        timer.daemon = True
        timer.start()
    return train(self, *args, **kwargs)


def paced_training_step(self, *args, **kwargs):
    time.sleep({pace})
    return training_step(self, *args, **kwargs)


def noted_save_checkpoint(self, *args, **kwargs):
    save_checkpoint(self, *args, **kwargs)
    note(self.state.global_step)


def killed_while_saving(self, output_dir):
    saves[0] += 1
    if saves[0] == int(env.get("KILL_AT_SAVE", 0)):
        kill()
    save_rng_state(self, output_dir)


Trainer.train, Trainer.training_step = timed_train, paced_training_step
Trainer._save_checkpoint, Trainer._save_rng_state = noted_save_checkpoint, killed_while_saving
atexit.register(note, "end")
sys.argv = [{train_py!r}, *sys.argv[1:]]
runpy.run_path({train_py!r}, run_name="__main__")
"""
PACE = 0.1


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["splits"][0]


def test_a_run_killed_at_five_random_moments_resumes_to_the_uninterrupted_results(tmp_path, synthetic_dir):
    """Kill one run five times, resuming after each (always `--resume true`, which starts from scratch where there
    is no checkpoint yet): first inside a checkpoint write (the N-th save), then at four moments of its training
    timeline (from `Trainer.train`'s start to the process's end: training, checkpoint writes and rotation, the last
    evaluations, results.json). N and the moments come from the seeded `random.Random` below; each moment is drawn
    uniformly from the uninterrupted run's measured timeline after the checkpoint the attempt resumes from (so the
    attempt is still running then; one that ends first is not counted). The recipe's `save_total_limit: 2` makes
    the rotation delete folders. The final results equal the uninterrupted run's."""
    rng = random.Random(20260321)
    config = tiny_recipe(tmp_path, synthetic_dir, num_train_epochs=4, max_train_samples=256)
    wrapper = tmp_path / "train_wrapper.py"
    wrapper.write_text(WRAPPER.format(train_py=str(REPO_ROOT / "train.py"), pace=PACE))

    def train(output_dir: Path, **env) -> subprocess.CompletedProcess:
        command = [sys.executable, str(wrapper), "--config", str(config), "--save_model", "false", "--output_dir",
                   str(output_dir), "--resume", "true"]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, **{k: str(v) for k, v in env.items()}})

    whole = train(tmp_path / "whole", TIMELINE=tmp_path / "timeline.jsonl")
    assert whole.returncode == 0, whole.stderr[-3000:]
    timeline = dict(json.loads(line) for line in (tmp_path / "timeline.jsonl").read_text().splitlines())
    end = timeline.pop("end")
    saved = {int(step): seconds for step, seconds in timeline.items()}  # step: when its checkpoint was complete
    assert len(saved) == 4, timeline  # one checkpoint per epoch

    run_dir = tmp_path / "killed"
    save = rng.randint(1, len(saved))
    killed = train(run_dir, KILL_AT_SAVE=save)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    half_written = next(run_dir.glob(f"split_0/lr_*/checkpoint-{sorted(saved)[save - 1]}"))
    assert (half_written / "model.safetensors").exists() and not (half_written / "trainer_state.json").exists()
    moments = [f"checkpoint write {save}"]

    for _ in range(12):
        if len(moments) == 5:
            break
        resumed = last_complete_checkpoint(next(run_dir.glob("split_0/lr_*")))
        start = saved[int(resumed.rsplit("-", 1)[1])] if resumed else 0.0
        moment = rng.uniform(start, end)
        attempt = train(run_dir, KILL_AFTER=moment - start)
        if attempt.returncode == -signal.SIGKILL:
            moments.append(f"{moment:.2f} s of {end:.2f} s")
        else:  # it ended before the moment
            assert attempt.returncode == 0, attempt.stderr[-3000:]
            print(f"ended before {moment:.2f} s of {end:.2f} s")
    assert len(moments) == 5, moments
    print("killed at:", moments)

    final = train(run_dir)
    assert final.returncode == 0, final.stderr[-3000:]
    expected, got = results_of(tmp_path / "whole"), results_of(run_dir)
    for part in ("validation", "test"):
        for name, value in expected[part].items():
            assert got[part][name] == pytest.approx(value, abs=1e-6), (part, name, moments)
