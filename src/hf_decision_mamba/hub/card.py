"""Model cards rendered from `templates/model_card.md` (also reachable as `model_cards/model_card.md`).

The metadata block follows the Hub's conventions for reinforcement-learning models: `library_name`,
`pipeline_tag: reinforcement-learning`, tags, the training dataset when it lives on the Hub, and `model-index`
results (`mean_reward` as "mean +/- std", plus the normalised score) for each evaluated environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .files import (
    CONFIG_NAME,
    EVAL_RESULTS_NAME,
    REPLAY_NAME,
    TRAINING_ARGS_NAME,
    TRAINING_CURVES_NAME,
    TRAINING_EVAL_REPORT_NAME,
    remote_code_files,
)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
DISTRIBUTION = "hf-decision-mamba"
INSTALL_ENV = "DMAMBA_INSTALL_COMMAND"
"""Environment variable with the install command the card shows (default: `default_install_command()`)."""
SOURCE_URL_LABELS = ("repository", "source", "source code", "homepage")
MODEL_ROWS = ("preset", "block_type", "token_layout", "hidden_size", "num_hidden_layers", "n_layer", "n_head",
              "state_size", "context_length", "max_ep_len", "rtg_scale", "target_return", "env_id")  # fmt: skip
TRAINING_ROWS = ("learning_rate", "per_device_train_batch_size", "max_steps", "num_train_epochs", "warmup_steps",
                 "weight_decay", "max_grad_norm", "lr_scheduler_type", "seed")  # fmt: skip
FAMILIES = {  # family -> (the card's name for the model, its tags)
    "decision_mamba": ("Decision Mamba", ["decision-mamba", "mamba"]),
    "decision_transformer": ("Decision Transformer (transformers' GPT-2 DT)", ["decision-transformer"]),
    "attention": (
        "Decision Transformer (GPT-2 attention in Decision Mamba's model)",
        ["decision-transformer"],
    ),
}


def model_family(config: dict[str, Any]) -> str:
    """`model_type`, or "attention" for a Decision Mamba config whose blocks are attention (a DT)."""
    model_type = config.get("model_type", "decision_mamba")
    return (
        "attention"
        if model_type == "decision_mamba" and config.get("block_type") == "attention"
        else model_type
    )


@dataclass
class CardInputs:
    """Everything a card is rendered from: the saved config and the optional JSON files next to it."""

    config: dict[str, Any]
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] | None = None
    training_eval: dict[str, Any] | None = None
    remote_code: list[str] = field(default_factory=list)
    has_replay: bool = False
    has_curves: bool = False

    @classmethod
    def from_folder(cls, folder: str | Path, eval_dir: str | Path | None = None) -> CardInputs:
        """Read `config.json`, `eval_results.json`, `training_args.json` and `env_eval_report.json` if present."""
        folder, evaluation = Path(folder), Path(eval_dir) if eval_dir is not None else Path(folder)
        config = _read_json(folder / CONFIG_NAME)
        if config is None:
            raise ValueError(f"{folder} has no {CONFIG_NAME}; expected a folder written by save_pretrained.")
        report = _read_json(evaluation / EVAL_RESULTS_NAME)
        return cls(
            config=config,
            evaluations=[report] if report else [],
            training=_read_json(folder / TRAINING_ARGS_NAME),
            training_eval=_read_json(folder / TRAINING_EVAL_REPORT_NAME),
            remote_code=remote_code_files(folder),
            has_replay=(evaluation / REPLAY_NAME).is_file(),
            has_curves=(folder / TRAINING_CURVES_NAME).is_file(),
        )


def default_install_command(distribution: str = DISTRIBUTION) -> str:
    """How a reader installs this package, from its metadata: `$DMAMBA_INSTALL_COMMAND` when set, else
    `pip install "<name> @ git+<repository>"` from a source URL in the metadata (`[project.urls]`) or the VCS URL
    it was installed from, else `pip install <path to a checkout>`: the name alone does not resolve on every
    package index."""
    if os.environ.get(INSTALL_ENV):
        return os.environ[INSTALL_ENV]
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return f"pip install {distribution}"
    name = dist.metadata["Name"] or distribution
    for entry in dist.metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in SOURCE_URL_LABELS and url.strip():
            return f'pip install "{name} @ git+{url.strip().removeprefix("git+")}"'
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if "vcs_info" in direct:
        return f'pip install "{name} @ {direct["vcs_info"]["vcs"]}+{direct["url"]}"'
    return f"pip install <path to a checkout of {name}>"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean_std(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.2f} +/- {std:.2f}"


def _target(result: dict[str, Any]) -> str:
    return "default" if result["target_return"] is None else f"{result['target_return']:g}"


def hub_dataset_id(source: str | None, config: str | None = None) -> str | None:
    """The Hub dataset a training source resolves to (`d4rl:...` -> the D4RL replay repo); None for local data."""
    if not source or source.startswith("embedded:") or Path(source).expanduser().exists():
        return None
    from ..data.sources import _resolve

    repo, _ = _resolve(source, config)
    return repo if repo.count("/") == 1 else None


def _metric(env_id: str, metric_type: str, name: str, value: Any) -> EvalResult:
    return EvalResult(
        task_type="reinforcement-learning",
        task_name="Reinforcement Learning",
        dataset_type=env_id,
        dataset_name=env_id,
        metric_type=metric_type,
        metric_name=name,
        metric_value=value,
    )


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """`model-index` entries: mean return ("mean +/- std") and normalised score per environment and target."""
    entries = []
    for report in inputs.evaluations:
        env_id, reference = report["env_id"], report.get("score_reference") or "normalized"
        for result in report["results"]:
            target = _target(result)
            returns = _mean_std(result["return_mean"], result["return_std"])
            entries.append(_metric(env_id, "mean_reward", f"mean return (target {target})", returns))
            if result.get("normalized_score_mean") is not None:
                name, score = (
                    f"normalized score (target {target}; {reference})",
                    result["normalized_score_mean"],
                )
                entries.append(_metric(env_id, "normalized_score", name, round(score, 2)))
    return entries


def card_data(inputs: CardInputs, model_name: str) -> ModelCardData:
    """The card's YAML metadata."""
    family = model_family(inputs.config)
    env_ids = sorted(
        {report["env_id"] for report in inputs.evaluations} | {inputs.config.get("env_id") or ""} - {""}
    )
    preset = inputs.config.get("preset")
    tags = [
        "reinforcement-learning",
        "offline-reinforcement-learning",
        *FAMILIES.get(family, (None, [family]))[1],
    ]
    tags += [tag for tag in (preset, *env_ids) if tag]
    data = (inputs.training or {}).get("data", {})
    dataset = hub_dataset_id(data.get("dataset"), data.get("dataset_config"))
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="reinforcement-learning",
        license="apache-2.0",
        tags=tags,
        datasets=[dataset] if dataset else None,
        model_name=model_name,
        eval_results=eval_results(inputs) or None,
    )


def _evaluation_rows(inputs: CardInputs) -> list[dict[str, str]]:
    rows = []
    for report in inputs.evaluations:
        for result in report["results"]:
            rows.append({
                "env_id": report["env_id"],
                "target": _target(result),
                "returns": _mean_std(result["return_mean"], result["return_std"]),
                "score": _mean_std(result.get("normalized_score_mean"), result.get("normalized_score_std")),
                "length": f"{result['episode_length_mean']:.0f}",
                "episodes": str(len(result["returns"])),
            })  # fmt: skip
    return rows


def _training_eval(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The LAST and BEST evaluations recorded during training, as one-line summaries."""
    if not report:
        return None

    def line(record: dict[str, Any]) -> str:
        result = record["report"]["results"][0]
        score = result.get("normalized_score_mean")
        text = f"return {_mean_std(result['return_mean'], result['return_std'])}"
        return text + (f", normalized score {score:.1f}" if score is not None else "")

    last, best = report["last"], report["best"]
    return {"count": len(report.get("history", [])), "last_step": last["step"], "last": line(last),
            "best_step": best["step"], "best": line(best)}  # fmt: skip


def _summary(config: dict[str, Any], training: dict[str, Any] | None) -> str:
    kind = FAMILIES.get(model_family(config), FAMILIES["decision_transformer"])[0]
    env_id = config.get("env_id") or "its environment"
    data = (training or {}).get("data", {})
    source = data.get("dataset")
    trained = f" trained offline on `{source}`" + (
        f" (`{data['dataset_config']}`)" if data.get("dataset_config") else ""
    )
    dataset = (training or {}).get("dataset_summary") or {}
    mean = (
        f" (mean episode return of the data: {dataset['return_mean']:.1f})"
        if "return_mean" in dataset
        else ""
    )
    return f"A {kind} policy for `{env_id}`{trained if source else ''}{mean}, as a `transformers` model."


def _rows(values: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, Any]]:
    """(key, value) for the keys that are set; epochs are left out when `max_steps` bounds training."""
    skip = {"num_train_epochs"} if (values.get("max_steps") or -1) > 0 else set()
    return [(key, values[key]) for key in keys if key not in skip and values.get(key) not in (None, "", -1)]


def render_model_card(
    folder: str | Path,
    repo_id: str | None = None,
    eval_dir: str | Path | None = None,
    model_name: str | None = None,
    install_command: str | None = None,
) -> ModelCard:
    """Render the model card of a saved model folder from the template; `repo_id` fills the usage snippet and
    `install_command` the install line (default: `default_install_command()`)."""
    inputs = CardInputs.from_folder(folder, eval_dir)
    repo = repo_id or f"<user>/{Path(folder).resolve().name}"
    name = model_name or repo.split("/")[-1]
    config = inputs.config
    replay_url = None
    if inputs.has_replay:
        replay_url = (
            f"https://huggingface.co/{repo_id}/resolve/main/{REPLAY_NAME}" if repo_id else REPLAY_NAME
        )
    curves_url = None
    if inputs.has_curves:
        curves_url = (
            f"https://huggingface.co/{repo_id}/resolve/main/{TRAINING_CURVES_NAME}"
            if repo_id
            else TRAINING_CURVES_NAME
        )
    targets = [r["target_return"] for report in inputs.evaluations for r in report["results"]]
    return ModelCard.from_template(
        card_data(inputs, name),
        template_path=str(TEMPLATE_PATH),
        model_name=name,
        repo_id=repo,
        summary=_summary(config, inputs.training),
        evaluations=inputs.evaluations,
        evaluation_rows=_evaluation_rows(inputs),
        training_eval=_training_eval(inputs.training_eval),
        replay_url=replay_url,
        curves_url=curves_url,
        install_command=install_command or default_install_command(),
        remote_code=inputs.remote_code,
        env_id=config.get("env_id") or "<env_id>",
        target_return=next((t for t in targets if t is not None), config.get("target_return")),
        model_rows=_rows(config, MODEL_ROWS),
        training_rows=_rows((inputs.training or {}).get("training", {}), TRAINING_ROWS),
    )


__all__ = [
    "TEMPLATE_PATH",
    "CardInputs",
    "card_data",
    "default_install_command",
    "eval_results",
    "hub_dataset_id",
    "render_model_card",
]
