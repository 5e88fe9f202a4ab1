"""Publish the demo as a Hugging Face Space: the app, its card, and this package's source.

    python spaces_demo/deploy.py user/dmamba-playground --model user/dmamba-hopper   # needs `hf auth login`
    python spaces_demo/deploy.py user/dmamba-playground --stage_only /tmp/space     # just write the files

The Space gets app.py, README.md (the Space card), packages.txt, and the package (pyproject.toml + src/) at
its root. Its requirements.txt installs the package from a Git URL (default: the Space's own repository,
which holds the package source), so the build works whether or not pip runs before the files are copied.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPACE_FILES = ("app.py", "README.md", "packages.txt")
LOCAL_PACKAGE_LINE = "-e ."
DEFAULT_MODEL = "hf-decision-mamba/dmamba-hopper-quickstart"
"""The `models:` entry of the card template, replaced by --model."""
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info", "*.parquet")
"""Build leftovers, and the embedded training data (the Space never trains)."""


def requirements(package_url: str) -> str:
    """spaces_demo/requirements.txt with the local package line pointing at `package_url`."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    pinned = [f"hf-decision-mamba @ {package_url}" if line == LOCAL_PACKAGE_LINE else line for line in lines]
    return "\n".join(pinned) + "\n"


def stage(destination: Path, space_id: str, model: str | None = None, package_url: str | None = None) -> Path:
    """Write the Space's files into `destination`; returns it."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(HERE / name, destination / name)
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")
    shutil.copytree(ROOT / "src", destination / "src", ignore=IGNORED, dirs_exist_ok=True)
    url = package_url or f"git+https://huggingface.co/spaces/{space_id}"
    (destination / "requirements.txt").write_text(requirements(url))
    if model:
        card = destination / "README.md"
        card.write_text(card.read_text().replace(DEFAULT_MODEL, model))
    return destination


def publish(folder: Path, space_id: str, model: str | None) -> None:
    """Create (or update) the Space from `folder` and point its default model at `model`."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    api.upload_folder(
        folder_path=folder, repo_id=space_id, repo_type="space", commit_message="Deploy the demo"
    )
    if model:
        api.add_space_variable(space_id, "DMAMBA_SPACE_MODEL", model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space_id", help="the Space, user/name")
    parser.add_argument("--model", help="Hub id of the default checkpoint (e.g. pushed with `dmamba push`)")
    parser.add_argument("--package_url", help="pip URL of this package (default: the Space's own Git repo)")
    parser.add_argument("--stage_only", type=Path, help="write the Space's files here and upload nothing")
    args = parser.parse_args(argv)
    if args.stage_only:
        stage(args.stage_only, args.space_id, args.model, args.package_url)
        print(f"Staged the Space in {args.stage_only}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        publish(stage(Path(folder), args.space_id, args.model, args.package_url), args.space_id, args.model)
    print(f"Published https://huggingface.co/spaces/{args.space_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
