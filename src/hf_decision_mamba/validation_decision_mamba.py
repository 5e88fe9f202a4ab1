"""Input checks of `DecisionMambaModel.forward` and `DecisionMambaPolicy.act`, and the finite-loss check of
`forward`: one-line `ValueError`s naming the field, what was received and what is expected.

Checks on types, dtypes and shapes are plain Python (tracing specialises or guards on them). Checks on values
(ranges, NaN/inf, the 0/1 left-padded mask) are data-dependent: in eager mode they raise a detailed
`ValueError`; under `torch.compile` / `torch.export` they become `torch._assert_async` ops in the graph
(a `RuntimeError` with the same field and expectation), so tracing never branches on tensor values.

Shipped as Hub remote code: imports only torch and the configuration file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .configuration_decision_mamba import DecisionMambaConfig

IGNORE_INDEX = -100  # transformers' ignore-index: discrete labels of -100 are left out of the loss

FORWARD_TENSORS = (
    "states",
    "actions",
    "rewards",
    "returns_to_go",
    "timesteps",
    "attention_mask",
    "labels",
    "state_embeds",
)


def require_tensors(**fields) -> None:
    """Each given field must be a torch.Tensor (or None)."""
    for name, value in fields.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{name}: got {type(value).__module__}.{type(value).__name__}, expected a torch.Tensor "
                "(convert with torch.as_tensor)."
            )


class ValueChecks:
    """Collects data-dependent checks; `run()` raises the first failure (eager) or asserts them all
    in the graph (while tracing)."""

    def __init__(self) -> None:
        self._checks: list[tuple[torch.Tensor, str, Callable[[], str]]] = []

    def add(self, ok: torch.Tensor, message: str, detail: Callable[[], str] | None = None) -> None:
        """ok: a 0-dim bool tensor; message: the error under tracing; detail: the eager error (default message)."""
        self._checks.append((ok, message, detail or (lambda: message)))

    def finite(self, name: str, value: torch.Tensor | None) -> None:
        if value is not None and value.is_floating_point() and value.numel():
            self.add(
                torch.isfinite(value).all(), f"{name}: contains NaN or inf values, expected finite numbers."
            )

    def in_range(
        self, name: str, value: torch.Tensor, high: int, expected: str, allowed: int | None = None
    ) -> None:
        """Integer values in [0, high) (or equal to `allowed`)."""
        if not value.numel():
            return
        bad = (value < 0) | (value >= high)
        if allowed is not None:
            bad = bad & (value != allowed)

        def detail() -> str:
            shown = value if allowed is None else value[value != allowed]
            return f"{name}: got values in [{int(shown.min())}, {int(shown.max())}], expected {expected}."

        self.add(~bad.any(), f"{name}: got values outside {expected}.", detail)

    def run(self) -> None:
        tracing = torch.compiler.is_compiling()
        for ok, message, detail in self._checks:
            if tracing:
                torch._assert_async(ok, message)
            elif not bool(ok):
                raise ValueError(detail())


def check_finite_loss(loss: torch.Tensor) -> None:
    """The loss must be finite. The inputs were checked, so a NaN or inf loss means the weights diverged; without
    this stop the Trainer logs it as the running average and saves the broken weights as the model."""
    checks = ValueChecks()
    advice = (
        "the weights or activations are no longer finite (a diverged run): lower --learning_rate, clip gradients "
        "with --max_grad_norm or train without --fp16/--bf16, and resume from a checkpoint written before it."
    )
    checks.add(
        torch.isfinite(loss).all(),
        f"loss: expected a finite number; {advice}",
        lambda: f"loss: got {loss.item()}, expected a finite number; {advice}",
    )
    checks.run()


def _first_row(bad: torch.Tensor) -> int:
    return int(bad.nonzero()[0, 0])


def check_attention_mask(mask: torch.Tensor, checks: ValueChecks) -> None:
    """0/1 values, at least one real step per row, left padding (0s, then 1s): the model's contract."""
    binary = (mask == 0) | (mask == 1)
    checks.add(
        binary.all(),
        "attention_mask: expected only 0 and 1 values.",
        lambda: f"attention_mask: got value {mask[~binary][0].item()}, expected only 0 and 1.",
    )
    real = mask != 0
    empty = ~real.any(dim=1)
    checks.add(
        ~empty.any(),
        "attention_mask: a row has no real step, expected at least one 1 per row.",
        lambda: f"attention_mask: row {_first_row(empty)} is all zeros, expected at least one 1 per row.",
    )
    # left padding: the n real steps of a row are its last n (no slicing, so no guards on K while tracing)
    steps = torch.arange(mask.shape[1], device=mask.device)
    left_padded = steps[None, :] >= mask.shape[1] - real.sum(dim=1, keepdim=True)
    right = (real != left_padded).any(dim=1)
    checks.add(
        ~right.any(),
        "attention_mask: a 0 follows a 1, expected left padding (0s, then 1s).",
        lambda: (
            f"attention_mask: row {_first_row(right)} has a 0 after a 1 (right padding or a hole), "
            "expected left padding (0s, then 1s)."
        ),
    )


def _integer(name: str, value: torch.Tensor | None, why: str) -> None:
    if value is not None and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ValueError(f"{name}: got dtype {value.dtype}, expected an integer dtype ({why}).")


def _shape(name: str, value: torch.Tensor | None, shape: tuple, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or tuple(value.shape) != shape:
        got = None if value is None else tuple(value.shape)
        raise ValueError(f"{name}: got shape {got}, expected {shape}.")


def _window_size(config: DecisionMambaConfig, states, state_embeds) -> tuple[int, int]:
    """(batch, K) from states or state_embeds, after checking their shape."""
    if state_embeds is not None:
        batch, steps = state_embeds.shape[:2] if state_embeds.dim() >= 2 else (0, 0)
        shape = (batch, steps, config.token_embedding_size)
        if states is not None or state_embeds.dim() != 3 or tuple(state_embeds.shape) != shape:
            got = "states and state_embeds" if states is not None else tuple(state_embeds.shape)
            raise ValueError(f"state_embeds: got {got}, expected shape {shape} (and no states).")
        name, shape = "state_embeds", tuple(state_embeds.shape)
    else:
        state_shape = tuple(config.state_shape or [config.state_dim])
        if states is None or states.dim() != 2 + len(state_shape) or tuple(states.shape[2:]) != state_shape:
            got = None if states is None else tuple(states.shape)
            raise ValueError(
                f"states: got shape {got}, expected (batch, K, {', '.join(map(str, state_shape))})."
            )
        name, shape = "states", tuple(states.shape)
        batch, steps = states.shape[:2]
    if batch == 0 or steps == 0:
        raise ValueError(f"{name}: got shape {shape}, expected batch >= 1 and K >= 1.")
    return batch, steps


def check_forward_inputs(
    config: DecisionMambaConfig,
    states=None,
    actions=None,
    rewards=None,
    returns_to_go=None,
    timesteps=None,
    attention_mask=None,
    labels=None,
    state_embeds=None,
) -> None:
    """Raise a `ValueError` naming the field, what was received and what the config expects.

    Discrete labels of -100 are ignored by the loss (transformers' convention); other labels must be valid
    actions. The attention mask must be 0/1, left-padded, with at least one real step per row."""
    require_tensors(
        states=states,
        actions=actions,
        rewards=rewards,
        returns_to_go=returns_to_go,
        timesteps=timesteps,
        attention_mask=attention_mask,
        labels=labels,
        state_embeds=state_embeds,
    )
    batch, steps = _window_size(config, states, state_embeds)
    action_shape = (batch, steps) if config.is_discrete else (batch, steps, config.act_dim)
    _shape("returns_to_go", returns_to_go, (batch, steps, 1))
    _shape("timesteps", timesteps, (batch, steps), optional=True)
    _shape("attention_mask", attention_mask, (batch, steps), optional=True)
    _shape("actions", actions, action_shape)
    if labels is not None and not (config.is_discrete and tuple(labels.shape) == (batch, steps, 1)):
        _shape("labels", labels, action_shape)
    _integer("timesteps", timesteps, "step indices")
    checks = ValueChecks()
    if config.is_discrete:
        for name, value in (("actions", actions), ("labels", labels)):
            _integer(name, value, "discrete actions")
        checks.in_range("actions", actions, config.n_actions, f"[0, {config.n_actions})")
        if labels is not None:
            expected = f"[0, {config.n_actions}) or {IGNORE_INDEX} (ignored)"
            checks.in_range("labels", labels, config.n_actions, expected, allowed=IGNORE_INDEX)
    if timesteps is not None:
        checks.in_range("timesteps", timesteps, config.max_ep_len, f"[0, max_ep_len={config.max_ep_len})")
    for name, value in (
        ("states", states),
        ("state_embeds", state_embeds),
        ("actions", actions),
        ("returns_to_go", returns_to_go),
        ("labels", labels),
    ):
        checks.finite(name, value)
    if attention_mask is not None:
        check_attention_mask(attention_mask, checks)
    checks.run()
