"""Acting with a Decision Mamba (or a Decision Transformer) in a batch of environments.

The policy owns what the model does not: state normalisation, return-to-go bookkeeping and the history of
the episode. Two modes:

- `window`: recompute the last `context_length` steps every step (the Decision Transformer protocol). Fits
  models trained on K-step windows (every preset's default training).
- `recurrent`: keep each mixer's conv and SSM state and feed only the new tokens, at constant cost per step.
  It equals `window` exactly while the episode is shorter than the context; past that it is DeMa's
  "RNN-like" policy, which fits models trained on whole trajectories.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

MODES = ("window", "recurrent")


class DecisionMambaPolicy:
    """Batched return-conditioned policy: `reset(num_envs)`, then `act(observation, reward)` every step.

    `observation` is (num_envs, *state_shape) (numpy or torch); `reward` is the reward each environment
    returned for the previous action (None on the first step). Returns numpy actions: (num_envs, act_dim)
    floats for continuous action spaces, (num_envs,) int64 indices for discrete ones.
    """

    WINDOW_BUFFERS = ("states", "actions", "window_returns", "timesteps", "mask")
    """The per-env (num_envs, context_length, ...) history of `window` mode."""

    def __init__(
        self,
        model: torch.nn.Module,
        mode: str = "window",
        target_return: float | Sequence[float] | None = None,
        state_mean: Sequence[float] | None = None,
        state_std: Sequence[float] | None = None,
        rtg_scale: float | None = None,
        context_length: int | None = None,
        deterministic: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {list(MODES)}.")
        config = model.config
        if mode == "recurrent" and not getattr(
            model, "supports_recurrent_acting", hasattr(model, "recurrent_step")
        ):
            raise ValueError(
                f"mode='recurrent' needs a Decision Mamba model with Mamba blocks, got {type(model).__name__}"
                f" (block_type={getattr(config, 'block_type', None)!r}); expected mode='window' for it."
            )
        self.model = model.eval()
        self.mode = mode
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.discrete = getattr(config, "action_space", "continuous") == "discrete"
        self.act_dim = config.act_dim
        self.state_shape = tuple(getattr(config, "state_shape", None) or [config.state_dim])
        self.context_length = context_length or getattr(config, "context_length", None) or 20
        self.max_timestep = getattr(config, "max_ep_len", 4096) - 1
        self.rtg_scale = float(rtg_scale or getattr(config, "rtg_scale", 1.0))
        self.target_return = (
            target_return if target_return is not None else getattr(config, "target_return", None)
        )
        self.deterministic = deterministic
        self.encodes_states = callable(getattr(model, "encode_states", None))
        mean = state_mean if state_mean is not None else getattr(config, "state_mean", None)
        std = state_std if state_std is not None else getattr(config, "state_std", None)
        self.state_mean = self._tensor(mean) if mean is not None else None
        self.state_std = self._tensor(std) if std is not None else None
        self.num_envs = 0
        self.started = False  # reset() was called (num_envs may later drop to 0 through keep())

    def _tensor(self, values, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(values, dtype=dtype, device=self.device)

    def _per_env(self, name: str, values, num_envs: int, allow_one: bool) -> torch.Tensor:
        """`values` as a finite (num_envs, 1) float tensor; one value for all envs when `allow_one`."""
        tensor = self._tensor(values)
        if tensor.numel() != num_envs and not (allow_one and tensor.numel() == 1):
            expected = f"1 or num_envs={num_envs}" if allow_one else f"num_envs={num_envs} (one per env)"
            raise ValueError(f"{name}: got {tensor.numel()} values, expected {expected}.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name}: contains NaN or inf values, expected finite numbers.")
        return tensor.reshape(-1).expand(num_envs).reshape(num_envs, 1)

    def reset(self, num_envs: int = 1, target_return: float | Sequence[float] | None = None) -> None:
        """Start `num_envs` new episodes in lockstep, conditioned on `target_return` (env units)."""
        target = target_return if target_return is not None else self.target_return
        if target is None:
            raise ValueError(
                "target_return: got None, expected a number (set it here or in config.target_return)."
            )
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
            raise ValueError(f"num_envs: got {num_envs!r}, expected a positive integer.")
        self.returns_to_go = self._per_env("target_return", target, num_envs, allow_one=True).clone()
        self.num_envs, self.started = num_envs, True
        self.timestep = 0
        self.previous_action = None
        if self.mode == "recurrent":
            self.cache = self.model.init_cache(num_envs)
        else:
            steps = self.context_length
            action_shape = () if self.discrete else (self.act_dim,)
            state_dtype = torch.uint8 if len(self.state_shape) == 3 else torch.float32
            self.states = (
                None  # the window of state embeddings, allocated at the first step (its width is the model's)
                if self.encodes_states
                else torch.zeros(num_envs, steps, *self.state_shape, dtype=state_dtype, device=self.device)
            )
            self.actions = torch.zeros(
                num_envs,
                steps,
                *action_shape,
                dtype=torch.long if self.discrete else torch.float32,
                device=self.device,
            )
            self.window_returns = torch.zeros(num_envs, steps, 1, device=self.device)
            self.timesteps = torch.zeros(num_envs, steps, dtype=torch.long, device=self.device)
            self.mask = torch.zeros(num_envs, steps, dtype=torch.long, device=self.device)

    def fork(self) -> DecisionMambaPolicy:
        """A policy with this one's model and settings and no episodes yet (`reset` it before `act`).

        Two forks act for two groups of envs in turn, so that one group's emulators step while the policy
        acts for the other.
        """
        forked = copy.copy(self)
        forked.num_envs, forked.started = 0, False
        return forked

    def keep(self, active) -> None:
        """Go on with only the envs where the boolean `active` (num_envs,) is true, in their order.

        Later `act` calls take (and return) those envs only: a vector rollout stops paying for episodes
        that have already ended while it waits for the longest one.
        """
        active = torch.as_tensor(active, dtype=torch.bool, device=self.device)
        if tuple(active.shape) != (self.num_envs,):
            raise ValueError(f"active: got shape {tuple(active.shape)}, expected ({self.num_envs},).")
        rows = active.nonzero().squeeze(1)
        self.num_envs = len(rows)
        names = ("returns_to_go", "previous_action")
        if self.mode == "recurrent":
            self.cache.keep(rows)
        else:
            names += self.WINDOW_BUFFERS
        for name in names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[rows])

    def _prepare_states(self, observation) -> torch.Tensor:
        states = torch.as_tensor(observation, device=self.device)
        if tuple(states.shape) != (self.num_envs, *self.state_shape):
            raise ValueError(
                f"observation: got shape {tuple(states.shape)}, expected {(self.num_envs, *self.state_shape)}."
            )
        if len(self.state_shape) == 3:  # image stacks stay uint8; the encoder scales them
            return states.to(torch.uint8)
        states = states.float()
        if not torch.isfinite(states).all():
            raise ValueError("observation: contains NaN or inf values, expected finite numbers.")
        if self.state_mean is not None:
            states = (states - self.state_mean) / self.state_std
        return states

    @torch.no_grad()
    def act(self, observation, reward=None):
        """Choose actions for the current observations, after accounting for the rewards just received."""
        if not self.started:
            raise RuntimeError("call reset(num_envs) before act().")
        if self.num_envs == 0:
            raise RuntimeError("act(): no environments left (keep() dropped them all); call reset(num_envs).")
        states = self._prepare_states(observation)  # checked before any state changes
        if reward is not None and self.timestep > 0:
            self.returns_to_go = self.returns_to_go - self._per_env("reward", reward, self.num_envs, False)
        scaled_returns = self.returns_to_go / self.rtg_scale
        timesteps = torch.full((self.num_envs,), min(self.timestep, self.max_timestep), device=self.device)
        if self.mode == "recurrent":
            preds = self.model.recurrent_step(
                self.cache, states, self.previous_action, scaled_returns, timesteps
            )
        else:
            preds = self._window_predict(states, scaled_returns, timesteps)
        action = self._choose(preds)
        if self.mode == "window":
            self.actions[:, -1] = action
        self.previous_action = action
        self.timestep += 1
        return action.cpu().numpy()

    def _window_predict(self, states, scaled_returns, timesteps) -> torch.Tensor:
        """Shift the new step into the K-step window (left-padded at the start) and predict its action.

        A model with `encode_states` gets its window as state embeddings, so each frame goes through the
        encoder once rather than once for each of the K steps it spends in the window.
        """
        if self.encodes_states:
            states = self.model.encode_states(states)
            if self.states is None:
                self.states = states.new_zeros(self.num_envs, self.context_length, *states.shape[1:])
        for buffer, value in (
            (self.states, states),
            (self.actions, torch.zeros_like(self.actions[:, 0])),
            (self.window_returns, scaled_returns),
            (self.timesteps, timesteps),
            (self.mask, torch.ones_like(self.mask[:, 0])),
        ):
            buffer[:] = torch.roll(buffer, shifts=-1, dims=1)
            buffer[:, -1] = value
        if self.encodes_states:
            inputs = {"state_embeds": self.states}
        else:
            inputs = {"states": self.states if len(self.state_shape) == 3 else self.states.to(self._dtype())}
        output = self.model(
            **inputs,
            actions=self.actions,
            rewards=torch.zeros_like(self.window_returns),
            returns_to_go=self.window_returns,
            timesteps=self.timesteps,
            attention_mask=self.mask,
            return_dict=True,
        )
        return output.action_preds[:, -1]

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _choose(self, preds: torch.Tensor) -> torch.Tensor:
        """The action from the model's predictions; non-finite ones stop (argmax would turn NaN into action 0)."""
        if not torch.isfinite(preds).all():
            raise ValueError(
                f"step {self.timestep}: the model predicted NaN or inf action values; expected finite predictions "
                "(a model with NaN or inf weights, e.g. from a diverged run, predicts them)"
            )
        if not self.discrete:
            return preds.float()
        if self.deterministic:
            return preds.argmax(dim=-1)
        return torch.distributions.Categorical(logits=preds.float()).sample()


__all__ = ["DecisionMambaPolicy", "MODES"]
