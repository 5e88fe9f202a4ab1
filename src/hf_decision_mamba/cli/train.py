"""`dmamba train`: train any preset (or a same-size Decision Transformer) on any supported dataset with the Trainer.

Arguments are the fields of `ModelArguments`, `DataArguments`, `EnvEvaluationArguments` and
`transformers.TrainingArguments` (`dmamba train --help`), or one JSON/YAML file holding them. Examples:

    dmamba train --preset dmamba-hopper --dataset d4rl:hopper-medium-v2 --output_dir outputs/hopper
    dmamba train --model_type decision_transformer --preset dmamba-hopper --dataset embedded:hopper
    torchrun --nproc_per_node 2 -m hf_decision_mamba.cli.train --use_cpu --max_steps 1000
"""

from __future__ import annotations

from ..evaluation import format_report, format_table
from ..network import require_hub
from ..training import SIGTERM_EXIT_CODE, TrainingResult, parse_train_args, run_training
from ..training.data import is_hub_source
from .errors import run_reporting_input_errors


def final_table(result: TrainingResult) -> str:
    """The final evaluation's title and one table: the final model (LAST) and, when training evaluated more
    than once, the best evaluation during training (BEST), labelled."""
    evaluation = result.evaluation
    title = format_report(evaluation).split("\n", 1)[0]
    reference = (
        f"\nnormalized score: {evaluation['score_reference']}" if evaluation.get("score_reference") else ""
    )
    rows = [(f"final model (LAST, step {result.global_step})", row) for row in evaluation["results"]]
    history = (result.training_eval or {}).get("history", [])
    if len(history) > 1:
        best = result.training_eval["best"]
        label = f"best during training (BEST, step {best['step']}, of {len(history)} evaluations)"
        rows += [(label, row) for row in best["report"]["results"]]
    return f"{title}{reference}\n{format_table(rows)}"


def report_result(result: TrainingResult) -> None:
    """On the main process, print where the run is, the final evaluation and where the training curves are."""
    if not result.main_process:
        return
    if result.interrupted:
        print(
            f"Stopped by SIGTERM at step {result.global_step}/{result.max_steps}; resume point: {result.checkpoint}. "
            "Run the same command again to resume."
        )
        return
    print(
        f"Trained {result.global_step}/{result.max_steps} steps; model, card and results in {result.output_dir}"
    )
    if result.evaluation is not None:
        print(final_table(result))
    if result.training_curves:
        print(f"Training curves: {result.training_curves}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dmamba train`; returns the exit status (2 for invalid arguments, 143 after SIGTERM)."""
    return run_reporting_input_errors("dmamba train", lambda: _train(argv))


def _train(argv: list[str] | None) -> int:
    args = parse_train_args(argv)
    if is_hub_source(args.data.dataset):  # without network: one line now, not `datasets`' 30 s of retries
        require_hub(f"load dataset {args.data.dataset!r}")
    result = run_training(args)
    report_result(result)
    return SIGTERM_EXIT_CODE if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
