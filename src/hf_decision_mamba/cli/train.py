"""`dmamba train`: train any preset (or a same-size Decision Transformer) on any supported dataset with the Trainer.

Arguments are the fields of `ModelArguments`, `DataArguments`, `EnvEvaluationArguments` and
`transformers.TrainingArguments` (`dmamba train --help`), or one JSON/YAML file holding them. Examples:

    dmamba train --preset dmamba-hopper --dataset d4rl:hopper-medium-v2 --output_dir outputs/hopper
    dmamba train --model_type decision_transformer --preset dmamba-hopper --dataset embedded:hopper
    torchrun --nproc_per_node 2 -m hf_decision_mamba.cli.train --use_cpu --max_steps 1000
"""

from __future__ import annotations

import sys

from ..evaluation import format_report
from ..training import SIGTERM_EXIT_CODE, TrainingResult, parse_train_args, run_training


def report_result(result: TrainingResult) -> None:
    """On the main process, print where the run is and the final evaluation."""
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
        print(format_report(result.evaluation))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dmamba train`; returns the exit status (2 for invalid arguments, 143 after SIGTERM)."""
    try:
        result = run_training(parse_train_args(argv))
    except ValueError as error:
        print(f"dmamba train: error: {error}", file=sys.stderr)
        return 2
    report_result(result)
    return SIGTERM_EXIT_CODE if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
