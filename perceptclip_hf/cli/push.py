"""`perceptclip push` (= `python push_to_hub.py`): publish a PerceptCLIP model on the Hugging Face Hub (remote code,
adapter-only safetensors, optional peft adapter, model card), or write the repo folder only (`--dry-run`)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..hub.source import OFFICIAL_REPOS, ModelSource

PUSH_PROG = "perceptclip push"
USAGE = """Publish a PerceptCLIP model on the Hugging Face Hub (remote code, adapter-only safetensors, peft adapter,
card).

    perceptclip push --run-dir runs/koniq --repo-id me/perceptclip-koniq            # training run
    perceptclip push --model-dir path/to/saved_model --repo-id me/model --private   # any saved model
    perceptclip push --from-official PerceptCLIP/PerceptCLIP_Emotions --repo-id me/emotions
    perceptclip push --run-dir runs/koniq --repo-id me/x --dry-run out/             # write the folder only
    perceptclip push --run-dir runs/koniq --repo-id me/x --space space/             # + a Space (the demo)
    perceptclip push --repo-id me/x --space space/                                  # the Space only

(`python push_to_hub.py ...` is the same command.)"""


NAME = "push"
HELP = "publish a model on the Hub (--help lists the options)"
DESCRIPTION = USAGE
PASSTHROUGH = True  # every argument goes to the push parser below, --help included


def run(args: argparse.Namespace) -> int:
    return main(args.argv, prog=PUSH_PROG)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--run-dir",
        type=Path,
        help="training run: <run>/results.json and <run>/model/ (or train.py's <run>/split_<k>/model/)",
    )
    source.add_argument("--model-dir", type=Path, help="any PerceptCLIP save_pretrained dir (card without results)")
    source.add_argument(
        "--from-official",
        metavar="SRC",
        help="official .pth file (or a folder holding it), official Hub repo id, or alias: "
        f"{', '.join(OFFICIAL_REPOS)}",
    )
    parser.add_argument(
        "--task",
        choices=sorted(OFFICIAL_REPOS),
        help="task of --from-official (default: the official repo's; 8 outputs: emotion)",
    )
    parser.add_argument(
        "--config-json", type=Path, help="--from-official: JSON of PerceptCLIPConfig arguments (default: CLIP ViT-L/14)"
    )
    parser.add_argument("--base-model", help="--from-official: backbone the checkpoint was trained on")
    parser.add_argument("--repo-id", required=True, help="target repo, e.g. me/perceptclip-koniq")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", help="message of the Hub commit (default: 'Upload PerceptCLIP model')")
    parser.add_argument("--token", help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.add_argument("--dry-run", metavar="DIR", type=Path, help="write the repo folder to DIR; upload nothing")
    parser.add_argument(
        "--peft-adapter",
        action="store_true",
        help="also write adapter/, a standard peft LoRA adapter of the backbone (+~9 MB for ViT-L/14)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also add the model exported for ONNX Runtime (LoRA merged; onnx/model.onnx, and "
        "onnx/model_quantized.onnx when int8 passes the agreement gate), validated as `perceptclip export` does",
    )
    parser.add_argument(
        "--space",
        metavar="DIR",
        type=Path,
        help="also write a Hugging Face Space folder to DIR (app.py: the `perceptclip demo` app of "
        "--repo-id, requirements.txt, README.md); upload it yourself with `hf upload "
        "me/my-space DIR --repo-type space`. Without a model source, only the Space is written "
        "(for a model already on the Hub)",
    )
    parser.add_argument(
        "--space-requirement",
        metavar="LINE",
        help="--space: the requirements.txt line that installs perceptclip-hf (not on PyPI yet), "
        "e.g. 'perceptclip-hf[demo] @ git+https://github.com/<owner>/<repo>.git@<tag>' "
        "(default: perceptclip-hf[demo]==<this version>, with a note to replace it)",
    )
    args = parser.parse_args(argv)
    if not (args.run_dir or args.model_dir or args.from_official):
        if not args.space:
            parser.error(
                "one of the arguments --run-dir --model-dir --from-official is required (or --space DIR "
                "alone, for a model already on the Hub)"
            )
        if args.dry_run or args.peft_adapter or args.private or args.revision or args.onnx:
            parser.error(
                "--dry-run, --peft-adapter, --onnx, --private and --revision publish a model: add --run-dir, "
                "--model-dir or --from-official (--space alone only writes the Space folder)"
            )
    if args.space_requirement and not args.space:
        parser.error("--space-requirement applies to --space DIR")
    if args.from_official:
        args.from_official = ModelSource.of(args.from_official, args.task)
        args.task = args.from_official.task
        if args.task is None and args.config_json:
            parser.error("--from-official with a file and --config-json needs --task")
    elif args.task or args.config_json or args.base_model:
        parser.error("--task, --config-json and --base-model apply to --from-official only")
    return args


def write_folder(args: argparse.Namespace, folder: Path) -> Path:
    """Write the repo folder the arguments describe (with ``--onnx``, its ONNX export added)."""
    folder = write_model_folder(args, folder)
    if args.onnx:
        from ..export.job import export_into_repo

        print("\n".join(export_into_repo(folder, report=print).lines()))
    return folder


def write_model_folder(args: argparse.Namespace, folder: Path) -> Path:
    """The model's repo folder (config, weights, remote code, card, processor; a peft adapter)."""
    from ..errors import loading_model
    from ..hub.official import convert_official
    from ..hub.repo import build_repo_folder
    from ..modeling import PerceptCLIPConfig

    peft_adapter = args.peft_adapter
    if args.from_official:
        config = None
        if args.config_json:
            config = PerceptCLIPConfig(**{**json.loads(args.config_json.read_text()), "task": args.task})
        source = args.from_official
        with loading_model(source.location, "--from-official", hint=source.hint):
            return convert_official(
                source.location,
                folder,
                args.task,
                config=config,
                repo_id=args.repo_id,
                peft_adapter=peft_adapter,
                base_model=args.base_model,
                token=args.token,
            )
    if args.run_dir:
        from ..run_layout import RESULTS_FILE, run_model_dir

        return build_repo_folder(
            run_model_dir(args.run_dir),
            folder,
            results=args.run_dir / RESULTS_FILE,
            repo_id=args.repo_id,
            peft_adapter=peft_adapter,
        )
    return build_repo_folder(args.model_dir, folder, repo_id=args.repo_id, peft_adapter=peft_adapter)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Publish; expected failures (missing run files, unreachable Hub) are one line and exit status 2."""
    from ..errors import run_command

    return run_command(prog or "push_to_hub.py", lambda: push(argv, prog))


def push(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)  # --help and usage errors before the model stack loads
    if args.space:
        from ..hub.space import write_space_folder

        space = write_space_folder(args.space, args.repo_id, args.space_requirement)
        print(
            f"Wrote the Space {space} (app.py serves {args.repo_id}); upload it with "
            f"`hf upload <you>/<space> {space} --repo-type space`."
        )
        if not (args.run_dir or args.model_dir or args.from_official):
            return 0
    if args.dry_run:
        folder = write_folder(args, args.dry_run)
        print(f"Wrote {folder} (dry run: nothing uploaded).")
        return 0
    from ..errors import OutputError, kind_of_hub_error, one_line
    from ..hub.repo import upload_repo_folder

    with tempfile.TemporaryDirectory(prefix="perceptclip-hub-") as tmp:
        folder = write_folder(args, Path(tmp))
        try:
            commit = upload_repo_folder(
                folder,
                args.repo_id,
                token=args.token,
                private=args.private,
                revision=args.revision,
                **({"commit_message": args.commit_message} if args.commit_message else {}),
            )
        except Exception as err:  # huggingface_hub's HTTP, auth and connection errors
            if not (isinstance(err, (OSError, ValueError)) or kind_of_hub_error(err)):
                raise
            raise OutputError(
                f"--repo-id {args.repo_id}: upload failed ({one_line(err, 300)}); check "
                "the token and the connection, or write the folder with --dry-run DIR and upload it "
                "later (`hf upload REPO DIR`)"
            ) from err
    print(f"Uploaded to {args.repo_id}: {commit.commit_url}")
    return 0
