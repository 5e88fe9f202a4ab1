"""Decision Mamba: the Decision Transformer with Mamba selective state-space mixers in place of attention.

One file covers every variant of the papers through config switches (see `DecisionMambaConfig`):
DMamba (pre-LN Mamba + MLP), DeMa (RMSNorm + Mamba, fp32 residual, (R_t, a_{t-1}, s_t) tokens or the
embedding-concatenated layout) and MambaDM's GLoMa (global + local Mamba fused by addition and an MLP).
`block_type="attention"` swaps the mixer for GPT-2's causal self-attention: the Decision Transformer baseline,
trained and evaluated by exactly the same code (for Atari frames, which `transformers`' DT cannot take).

Padding is exact: padded positions enter the mixer as zeros with a zero step size, so they never touch the
convolution or the scan state of real positions. The same weights run a parallel forward (training, window
acting) and a constant-cost recurrent step (recurrent acting).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_decision_mamba import DecisionMambaConfig
from .selective_scan import causal_conv1d, dropout_add, selective_scan, selective_state_update
from .validation_decision_mamba import IGNORE_INDEX, check_finite_loss, check_forward_inputs

# ----------------------------------------------------------------------------------------------------------
# Outputs and recurrent cache
# ----------------------------------------------------------------------------------------------------------


@dataclass
class DecisionMambaOutput(ModelOutput):
    """Output of [`DecisionMambaModel`]; field names follow `DecisionTransformerOutput`.

    Args:
        loss: Masked MSE (continuous) or cross-entropy (discrete) against `labels`, when given.
        action_preds: (batch, K, act_dim) actions (continuous) or logits (discrete) for every timestep.
        last_hidden_state: (batch, K * tokens_per_step, hidden_size) output of the final norm.
        hidden_states: Embedding output plus each block's output, when `output_hidden_states=True`.
        attentions: Each layer's implicit (hidden) attention of its (global) mixer in transformers' 4-D layout,
            (batch, 1, tokens, tokens): one "head" per layer, the mean over the mixer's channels
            (`block_type="attention"`: the softmax weights, (batch, num_attention_heads, tokens, tokens)).
    """

    loss: torch.Tensor | None = None
    action_preds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MambaState:
    """Recurrent state of one mixer: its last `conv_kernel - 1` inputs (time-major) and the SSM state."""

    def __init__(self, batch: int, inner: int, conv_kernel: int, state_size: int, device, dtype) -> None:
        self.conv = torch.zeros(batch, conv_kernel - 1, inner, device=device, dtype=dtype)
        self.ssm = torch.zeros(
            batch, inner, state_size, device=device, dtype=torch.promote_types(dtype, torch.float32)
        )

    def reset(self, which: torch.Tensor | None = None) -> None:
        """Zero the state of all sequences, or of those where the boolean `which` (batch,) is true."""
        if which is None:
            self.conv.zero_()
            self.ssm.zero_()
        else:
            keep = (~which).to(self.conv.dtype)
            self.conv.mul_(keep[:, None, None])
            self.ssm.mul_(keep[:, None, None].to(self.ssm.dtype))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the sequences at the indices `rows` (in that order), dropping the others."""
        self.conv, self.ssm = self.conv[rows], self.ssm[rows]


class DecisionMambaCache:
    """Per-layer mixer states for recurrent acting; the cost of a step does not grow with the episode."""

    def __init__(self, config: DecisionMambaConfig, batch: int, device, dtype) -> None:
        args = (batch, config.intermediate_size, config.conv_kernel, config.state_size, device, dtype)
        self.global_states = [MambaState(*args) for _ in range(config.num_hidden_layers)]
        self.local_states = (
            [MambaState(*args) for _ in range(config.num_hidden_layers)]
            if config.block_type == "gloma"
            else None
        )

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the sequences at the indices `rows`, e.g. to stop computing for finished episodes."""
        for state in self.global_states + (self.local_states or []):
            state.keep(rows)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


class DecisionMambaRMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in float32 (as in Mamba and DeMa)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        dtype = hidden.dtype
        hidden = hidden.float()
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * hidden).to(dtype)


def make_norm(config: DecisionMambaConfig, size: int | None = None) -> nn.Module:
    size = size or config.hidden_size
    if config.norm_type == "rms_norm":
        return DecisionMambaRMSNorm(size, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(size, eps=config.layer_norm_epsilon)


def state_space_dtype() -> torch.dtype:
    """The dtype new state-space parameters take: float32 while a model is built in half precision (e.g.
    `from_config(..., dtype=torch.bfloat16)`), else torch's default dtype."""
    default = torch.get_default_dtype()
    return torch.float32 if default in (torch.float16, torch.bfloat16) else default


class DecisionMambaMixer(nn.Module):
    """The Mamba-1 selective SSM mixer; parameter names match `mamba_ssm.Mamba` so weights move unchanged."""

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__()
        self.config = config
        inner, n, rank = config.intermediate_size, config.state_size, config.time_step_rank
        self.in_proj = nn.Linear(config.hidden_size, 2 * inner, bias=config.use_bias)
        self.conv1d = nn.Conv1d(
            inner,
            inner,
            config.conv_kernel,
            groups=inner,
            padding=config.conv_kernel - 1,
            bias=config.use_conv_bias,
        )
        self.x_proj = nn.Linear(inner, rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(rank, inner, bias=True)
        dtype = state_space_dtype()
        self.dt_proj.bias.data = self.dt_proj.bias.data.to(dtype)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(inner, 1).to(dtype)
        )
        self.D = nn.Parameter(torch.ones(inner, dtype=dtype))
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=config.use_bias)

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's S4D-real `A_log`, unit `D` and log-uniform step-size init of `dt_proj` (undone by generic init)."""
        config, inner = self.config, self.config.intermediate_size
        init.copy_(
            self.A_log,
            torch.log(torch.arange(1, config.state_size + 1, dtype=torch.float32)).repeat(inner, 1),
        )
        init.ones_(self.D)
        std = config.time_step_rank**-0.5
        init.uniform_(self.dt_proj.weight, -std, std)
        low, high = math.log(config.time_step_min), math.log(config.time_step_max)
        dt = torch.exp(torch.rand(inner) * (high - low) + low).clamp(min=config.time_step_floor)
        init.copy_(self.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
        if self.conv1d.bias is not None:
            init.zeros_(self.conv1d.bias)

    def _in_proj(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and z, (batch, L, inner) each: `in_proj`'s two halves as two products. Their gradients then reach
        `in_proj` without being concatenated and copied back into (batch * L, 2 * inner)."""
        inner, weight, bias = self.config.intermediate_size, self.in_proj.weight, self.in_proj.bias
        halves = (slice(None, inner), slice(inner, None))
        return tuple(F.linear(hidden, weight[h], None if bias is None else bias[h]) for h in halves)

    def _ssm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the conv output x (..., inner) compute the step size and the input-dependent B and C."""
        rank, n = self.config.time_step_rank, self.config.state_size
        dt, B, C = self.x_proj(x).split([rank, n, n], dim=-1)
        # the bias is added apart: it stays float32 in a half-precision model (see `float32_parameter_names`)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight) + self.dt_proj.bias)
        return delta.to(x.dtype), B, C

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Parallel forward over (batch, L, hidden); `mask` (batch, L) zeroes padded inputs and step sizes."""
        backend = self.config.scan_backend
        x, z = (t.transpose(1, 2) for t in self._in_proj(hidden))  # (batch, inner, L), channels-last
        if mask is not None:
            x = x * mask[:, None, :]
        x = causal_conv1d(
            x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu", backend=backend
        )
        delta, B, C = self._ssm_inputs(x.transpose(1, 2))
        delta = delta.transpose(1, 2)
        if mask is not None:
            delta = delta * mask[:, None, :]
        A = -torch.exp(self.A_log.float())
        B, C = B.transpose(1, 2), C.transpose(1, 2)
        y = selective_scan(x, delta, A, B, C, self.D.float(), z, backend=backend)
        attention = hidden_attention(delta, A, B, C) if output_attentions else None
        return self.out_proj(y.transpose(1, 2)), attention

    def step(self, hidden: torch.Tensor, state: MambaState) -> torch.Tensor:
        """Recurrent steps for n new tokens (batch, n, hidden) from `state`, updated in place: the cost
        depends on n, never on how many tokens came before."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (batch, n, inner) each
        history = torch.cat([state.conv, x.to(state.conv.dtype)], dim=1)
        state.conv.copy_(history[:, x.shape[1] :])
        windows = history.unfold(1, self.config.conv_kernel, 1)  # (batch, n, inner, conv_kernel)
        x = (windows * self.conv1d.weight.squeeze(1)).sum(-1)
        x = F.silu(x + self.conv1d.bias if self.conv1d.bias is not None else x)
        delta, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(
            state.ssm,
            *(t.transpose(1, 2) for t in (x, delta)),
            A,
            *(t.transpose(1, 2) for t in (B, C)),
            self.D.float(),
            z.transpose(1, 2),
            self.config.scan_backend,
        )
        return self.out_proj(y.transpose(1, 2))


def hidden_attention(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Mamba's implicit attention, averaged over channels: alpha[t, s] = C_t . exp(A * sum_{s<k<=t} delta_k) delta_s B_s.

    delta: (batch, inner, L), A: (inner, N), B, C: (batch, N, L). Returns (batch, L, L), zero above the diagonal.
    """
    cumulative = delta.float().cumsum(-1)  # (batch, inner, L)
    gap = cumulative[..., :, None] - cumulative[..., None, :]  # (batch, inner, t, s)
    length = delta.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
    gap = gap.masked_fill(~causal, 0.0)
    attention = torch.zeros_like(gap)
    for n in range(A.shape[1]):  # one state dimension at a time keeps memory at (batch, inner, L, L)
        weight = torch.exp(A[:, n, None, None] * gap) * (C[:, None, n, :, None] * B[:, None, n, None, :])
        attention += weight
    attention = attention * delta.float()[..., None, :]
    return attention.masked_fill(~causal, 0.0).mean(1)


class DecisionMambaAttention(nn.Module):
    """GPT-2's causal multi-head self-attention with the Mamba mixer's interface (`block_type="attention"`): the
    Decision Transformer's mixer, so that a DT trains through the same embeddings, heads, loss and policy."""

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__()
        self.heads, self.p = config.num_attention_heads, config.dropout
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention over (batch, L, hidden); a token sees itself and the unpadded tokens before it (`mask`
        (batch, L) marks real tokens), so padding never reaches a real token."""
        batch, length, size = hidden.shape
        q, k, v = (
            t.view(batch, length, self.heads, -1).transpose(1, 2) for t in self.qkv_proj(hidden).chunk(3, -1)
        )
        allowed = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
        if mask is not None:
            itself = torch.eye(length, dtype=torch.bool, device=hidden.device)
            allowed = (allowed & (mask[:, None, None, :] > 0)) | itself
        dropout = self.p if self.training else 0.0
        if not output_attentions:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
            weights = None
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            weights = scores.float().masked_fill(~allowed, float("-inf")).softmax(-1).to(q.dtype)
            y = F.dropout(weights, dropout, self.training) @ v
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, size)), weights


class DecisionMambaDropout(nn.Module):
    """`nn.Dropout` that can also add a residual: `residual + dropout(x)`, one fused pass on the CPU path
    (see `dropout_add`)."""

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__()
        self.config, self.p = config, config.dropout

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return dropout_add(x, self.p, residual, self.training, self.config.scan_backend)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DecisionMambaMLP(nn.Module):
    """The transformer feed-forward network: Linear, GELU, Linear."""

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.mlp_ratio * config.hidden_size)
        self.fc_out = nn.Linear(config.mlp_ratio * config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(hidden)))


class DecisionMambaBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: `x += mixer(norm(x))` (GLoMa: `+ local_mixer(norm(x))`), then `x += MLP(norm(x))`.

    A `GradientCheckpointingLayer`: `gradient_checkpointing_enable()` recomputes its forward in the backward.
    """

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = make_norm(config)
        self.mixer = (DecisionMambaAttention if config.block_type == "attention" else DecisionMambaMixer)(
            config
        )
        self.local_mixer = DecisionMambaMixer(config) if config.block_type == "gloma" else None
        self.mlp_norm = make_norm(config) if config.use_mlp else None
        self.mlp = DecisionMambaMLP(config) if config.use_mlp else None
        self.dropout = DecisionMambaDropout(config)

    def _residual(self, residual: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.dropout(update.to(residual.dtype), residual)

    def _feed_forward(self, residual: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return residual
        return self._residual(residual, self.mlp(self.mlp_norm(residual.to(self.mlp_norm.weight.dtype))))

    def forward(
        self,
        residual: torch.Tensor,
        mask: torch.Tensor | None,
        local_chunks: LocalChunks | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.norm(residual.to(self.norm.weight.dtype))
        update, attention = self.mixer(normed, mask, output_attentions)
        if self.local_mixer is not None:
            local_in, local_mask = local_chunks.split(normed)
            update = update + local_chunks.merge(self.local_mixer(local_in, local_mask)[0])
        if attention is not None and attention.dim() == 3:
            attention = attention[:, None]  # transformers' (batch, heads=1, L, L)
        return self._feed_forward(self._residual(residual, update)), attention

    def step(
        self, residual: torch.Tensor, cache: DecisionMambaCache, layer: int, local_reset: LocalReset | None
    ) -> torch.Tensor:
        """Recurrent form of `forward` for the n new tokens (batch, n, hidden) of one timestep."""
        normed = self.norm(residual.to(self.norm.weight.dtype))
        update = self.mixer.step(normed, cache.global_states[layer])
        if self.local_mixer is not None:
            update = update + self._local_step(normed, cache.local_states[layer], local_reset)
        return self._feed_forward(self._residual(residual, update))

    def _local_step(self, normed: torch.Tensor, state: MambaState, reset: LocalReset) -> torch.Tensor:
        """Local mixer over the new tokens, starting a new sub-sequence at token `reset.position`."""
        parts = [self.local_mixer.step(normed[:, : reset.position], state)] if reset.position else []
        state.reset(reset.rows)
        parts.append(self.local_mixer.step(normed[:, reset.position :], state))
        return torch.cat(parts, dim=1)


@dataclass
class LocalReset:
    """Where GLoMa's local sub-sequence restarts among a step's new tokens, and for which batch rows."""

    position: int
    rows: torch.Tensor


class LocalChunks:
    """GLoMa's sub-sequences: cut the token sequence into chunks of `local_window` timesteps.

    Chunks are aligned to absolute episode timesteps (a chunk starts where `timestep % window == 0`), so left
    padding and a sliding window never move a chunk boundary. Positions outside the sequence are masked.
    """

    def __init__(
        self, timesteps: torch.Tensor, mask: torch.Tensor, window: int, tokens_per_step: int
    ) -> None:
        batch, steps = timesteps.shape
        self.batch, self.tokens, self.tokens_per_step = batch, steps * tokens_per_step, tokens_per_step
        self.chunk_tokens = window * tokens_per_step
        if window == 1:
            self.index = None
            self.mask = mask.reshape(batch * steps, tokens_per_step)
            return
        real = mask[:, ::tokens_per_step] > 0
        positions = torch.arange(steps, device=timesteps.device).expand(batch, steps)
        last = torch.where(real, positions, -1).max(dim=1).values.clamp(min=0)
        last_timestep = timesteps.gather(1, last[:, None]).squeeze(1)
        shift = (last_timestep - last) % window  # extended position of step i is i + shift
        extended_steps = math.ceil((steps + window - 1) / window) * window
        step_index = positions + shift[:, None]
        token_offsets = torch.arange(tokens_per_step, device=timesteps.device)
        self.index = (step_index[..., None] * tokens_per_step + token_offsets).reshape(batch, -1)
        self.extended_tokens = extended_steps * tokens_per_step
        extended_mask = mask.new_zeros(batch, self.extended_tokens).scatter(1, self.index, mask)
        self.mask = extended_mask.reshape(-1, self.chunk_tokens)

    def split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, tokens, hidden) -> (batch * chunks, chunk_tokens, hidden) and its mask."""
        size = hidden.shape[-1]
        if self.index is None:
            return hidden.reshape(-1, self.tokens_per_step, size), self.mask
        extended = hidden.new_zeros(self.batch, self.extended_tokens, size)
        extended = extended.scatter(1, self.index[..., None].expand(-1, -1, size), hidden)
        return extended.reshape(-1, self.chunk_tokens, size), self.mask

    def merge(self, chunks: torch.Tensor) -> torch.Tensor:
        """Inverse of `split`: back to (batch, tokens, hidden)."""
        size = chunks.shape[-1]
        if self.index is None:
            return chunks.reshape(self.batch, self.tokens, size)
        extended = chunks.reshape(self.batch, self.extended_tokens, size)
        return extended.gather(1, self.index[..., None].expand(-1, -1, size))


class AtariStateEncoder(nn.Module):
    """DT's Nature-CNN over 4x84x84 frame stacks (uint8 or float in [0, 255]) to a Tanh embedding."""

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.linear = nn.Linear(3136, embedding_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        leading = frames.shape[:-3]
        pixels = frames.reshape(-1, *frames.shape[-3:]).to(self.conv[0].weight.dtype)
        features = self.conv(pixels / 255.0)
        return torch.tanh(self.linear(features)).reshape(*leading, -1)


def masked_action_loss(
    preds: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor, discrete: bool = False
) -> torch.Tensor:
    """Mean loss over the real (unpadded) steps: MSE for continuous actions, cross-entropy on logits for
    discrete ones, where labels of -100 are ignored (transformers' convention). Shared with the Decision
    Transformer baseline so both train on the same objective. Weighted rather than indexed, so the shapes
    never depend on the mask's values (torch.compile / export); 0 when no step counts."""
    weight = attention_mask > 0
    if discrete:
        labels = labels.reshape(weight.shape).long()
        weight = weight & (labels != IGNORE_INDEX)
        targets = torch.where(weight, labels, torch.zeros_like(labels))
        losses = F.cross_entropy(preds.float().flatten(0, 1), targets.flatten(), reduction="none")
        losses = losses.view(weight.shape)
    else:
        losses = F.mse_loss(preds.float(), labels.float(), reduction="none").mean(-1)
    weight = weight.to(losses.dtype)
    return (losses * weight).sum() / weight.sum().clamp(min=1.0)


def weight_decay_param_groups(
    model: nn.Module, weight_decay: float, weight_types: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
) -> list[dict]:
    """AdamW groups: decay only the weights of `weight_types` layers; never `A_log`, `D`, norms, biases or
    embeddings (the recipe of DT and Mamba)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                is_weight = name == "weight" and isinstance(module, weight_types)
                (decay if is_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


class DecisionMambaPreTrainedModel(PreTrainedModel):
    config_class = DecisionMambaConfig
    config: DecisionMambaConfig
    base_model_prefix = "decision_mamba"
    main_input_name = "states"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecisionMambaBlock"]
    # The state-space parameters stay float32 in a float16 or bfloat16 model, whether it is loaded with
    # `from_pretrained(..., dtype=...)` (this list) or cast with `.to()`/`.half()`/`.bfloat16()` (`_apply`).
    # Patterns are searched in parameter names, as transformers does.
    _keep_in_fp32_modules_strict = ["A_log", r"mixer\.D$", r"dt_proj\.bias"]

    @classmethod
    def _float32_pattern(cls) -> re.Pattern:
        return re.compile("|".join(cls._keep_in_fp32_modules_strict))

    def float32_parameter_names(self) -> list[str]:
        """Names of the parameters kept float32 when the model is float16 or bfloat16: `A_log`, `D` and
        `dt_proj.bias` of every mixer. Norms and all other weights follow the model's dtype."""
        pattern = self._float32_pattern()
        return [name for name, _ in self.named_parameters() if pattern.search(name)]

    def _apply(self, fn, recurse: bool = True):
        """Cast like `nn.Module._apply`, then put back the float32 parameters that `fn` made float16 or
        bfloat16, from their values before the cast (no rounding through half precision)."""
        params = dict(self.named_parameters())
        before = {name: params[name].data for name in self.float32_parameter_names()}
        super()._apply(fn, recurse)
        params = dict(self.named_parameters())
        for name, old in before.items():
            param = params[name]
            if param.dtype in (torch.float16, torch.bfloat16):
                param.data = old.to(device=param.device, dtype=torch.float32)
                if param.grad is not None:
                    param.grad = param.grad.float()
        return self

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Generic init for linear/embedding/norm layers, then restore Mamba's own SSM initialisation."""
        super()._init_weights(module)
        if isinstance(module, DecisionMambaMixer):
            module.reset_ssm_parameters()


class DecisionMambaModel(DecisionMambaPreTrainedModel):
    """Decision Mamba: embeds (return-to-go, state, action) tokens, runs Mamba blocks, predicts actions.

    The forward takes the inputs of `transformers.DecisionTransformerModel` and adds `labels` (target
    actions) so that the plain `Trainer` computes and reports the loss.
    """

    def __init__(self, config: DecisionMambaConfig) -> None:
        super().__init__(config)
        size = config.token_embedding_size
        if config.state_encoder == "atari_cnn":
            self.embed_state = AtariStateEncoder(size)
        else:
            self.embed_state = nn.Linear(config.state_dim, size)
        self.embed_return = nn.Linear(1, size)
        if config.is_discrete:  # one extra index for "no previous action" (first step of a window)
            self.embed_action = nn.Embedding(config.n_actions + 1, size)
        else:
            self.embed_action = nn.Linear(config.act_dim, size)
        self.embed_timestep = nn.Embedding(config.max_ep_len, size) if config.use_timestep_embedding else None
        self.embed_norm = make_norm(config, size * (3 if config.token_layout == "concat" else 1))
        projected = size * (3 if config.token_layout == "concat" else 1)
        self.embed_proj = (
            nn.Linear(projected, config.hidden_size) if projected != config.hidden_size else None
        )
        self.embed_dropout = DecisionMambaDropout(config)
        self.layers = nn.ModuleList(DecisionMambaBlock(config) for _ in range(config.num_hidden_layers))
        self.norm_f = make_norm(config)
        self.predict_action = nn.Linear(config.hidden_size, config.act_dim)
        self.post_init()

    # -- inputs ------------------------------------------------------------------------------------------

    def _validate(
        self,
        states,
        actions,
        returns_to_go,
        timesteps,
        attention_mask,
        labels,
        state_embeds=None,
        rewards=None,
    ) -> None:
        """Raise a `ValueError` naming the field, what was received and what the config expects (see
        `validation_decision_mamba`: value checks become graph asserts under torch.compile / export)."""
        check_forward_inputs(
            self.config,
            states,
            actions,
            rewards,
            returns_to_go,
            timesteps,
            attention_mask,
            labels,
            state_embeds,
        )

    def _no_action(self, batch: int, device: torch.device) -> torch.Tensor:
        """The "no previous action" input of one step: zeros, or the extra index `n_actions` when discrete."""
        if self.config.is_discrete:
            return torch.full((batch, 1), self.config.n_actions, dtype=torch.long, device=device)
        return torch.zeros(batch, 1, self.config.act_dim, device=device)

    def _previous_actions(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """a_{t-1} for each step; "no action" where the previous step is outside the window or padding."""
        none = self._no_action(actions.shape[0], actions.device).to(actions.dtype)
        previous = torch.cat([none, actions[:, :-1]], dim=1)
        has_previous = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1) > 0
        has_previous = has_previous.view(*has_previous.shape, *([1] * (previous.dim() - 2)))
        return torch.where(has_previous, previous, none)

    def _embed_actions(self, actions: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.config.is_discrete:
            embedded = self.embed_action(actions.long())
            if self.config.state_encoder == "atari_cnn":
                embedded = torch.tanh(embedded)
        else:
            embedded = self.embed_action(actions.to(self.embed_action.weight.dtype))
        return self._add_time(embedded, timesteps)

    def _embed_returns(self, returns_to_go: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        embedded = self.embed_return(returns_to_go.to(self.embed_return.weight.dtype))
        if self.config.state_encoder == "atari_cnn":
            embedded = torch.tanh(embedded)
        return self._add_time(embedded, timesteps)

    def encode_states(self, states: torch.Tensor) -> torch.Tensor:
        """The state encoder's output for (..., *state_shape) states, without the timestep embedding.

        Pass it back to `forward` as `state_embeds` to skip re-encoding: the window policy encodes each
        frame once instead of once per step it stays in the window.
        """
        if self.config.state_encoder != "atari_cnn":
            states = states.to(self.embed_state.weight.dtype)
        return self.embed_state(states)

    def _embed_states(
        self, states: torch.Tensor | None, timesteps: torch.Tensor, state_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._add_time(self.encode_states(states) if state_embeds is None else state_embeds, timesteps)

    def _add_time(self, embedded: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return embedded if self.embed_timestep is None else embedded + self.embed_timestep(timesteps)

    def _finish_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Norm, optional projection to `hidden_size` and dropout, applied token by token."""
        tokens = self.embed_norm(tokens)
        if self.embed_proj is not None:
            tokens = self.embed_proj(tokens)
        return self.embed_dropout(tokens)

    def embed_tokens(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor,
        previous_actions: torch.Tensor | None = None,
        state_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Interleave the per-step embeddings into the token sequence of the configured layout.

        Returns (batch, K * tokens_per_step, hidden_size): rsa = (R_t, s_t, a_t), ras = (R_t, a_{t-1}, s_t),
        concat = one token per step from the concatenated (R_t, a_{t-1}, s_t) embeddings. `previous_actions`
        overrides the a_{t-1} derived from `actions` (used by the recurrent step); `state_embeds` replaces
        `encode_states(states)`.
        """
        layout = self.config.token_layout
        ret = self._embed_returns(returns_to_go, timesteps)
        state = self._embed_states(states, timesteps, state_embeds)
        if layout == "rsa":
            action = self._embed_actions(actions, timesteps)
            parts = (ret, state, action)
        else:
            if previous_actions is None:
                previous_actions = self._previous_actions(actions, attention_mask)
            parts = (ret, self._embed_actions(previous_actions, timesteps), state)
        if layout == "concat":
            return self._finish_tokens(torch.cat(parts, dim=-1))
        batch, steps = timesteps.shape
        return self._finish_tokens(torch.stack(parts, dim=2).reshape(batch, steps * 3, -1))

    @property
    def action_token(self) -> int:
        """Index, within a step's tokens, of the token whose output predicts a_t."""
        return {"rsa": 1, "ras": 2, "concat": 0}[self.config.token_layout]

    # -- heads and loss ----------------------------------------------------------------------------------

    def _predict_actions(self, hidden: torch.Tensor) -> torch.Tensor:
        preds = self.predict_action(hidden)
        if self.config.action_tanh and not self.config.is_discrete:
            preds = torch.tanh(preds)
        return preds

    # -- forward -----------------------------------------------------------------------------------------

    def forward(
        self,
        states: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        returns_to_go: torch.Tensor | None = None,
        timesteps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        state_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> DecisionMambaOutput | tuple:
        """Predict a_t for every step of a (left-padded) window of K steps.

        Shapes as `DecisionTransformerModel`: states (batch, K, state_dim) (Atari: (batch, K, 4, 84, 84)),
        actions (batch, K, act_dim) (discrete: (batch, K) integers), rewards and returns_to_go (batch, K, 1),
        timesteps and attention_mask (batch, K). `rewards` is accepted for compatibility and not used, as in DT.
        `labels` (target actions, shaped like `actions`) turns on the loss. `state_embeds` (batch, K, size):
        `encode_states(states)` computed beforehand, given instead of `states`.
        """
        output_hidden_states = output_hidden_states or self.config.output_hidden_states
        output_attentions = output_attentions or self.config.output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        self._validate(
            states, actions, returns_to_go, timesteps, attention_mask, labels, state_embeds, rewards
        )
        batch, steps = returns_to_go.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, steps, dtype=torch.long, device=returns_to_go.device)
        if timesteps is None:
            timesteps = torch.arange(steps, device=returns_to_go.device).expand(batch, steps)
        tokens_per_step = self.config.tokens_per_step
        hidden = self.embed_tokens(
            states, actions, returns_to_go, timesteps, attention_mask, state_embeds=state_embeds
        )
        mask = attention_mask.to(hidden.dtype).repeat_interleave(tokens_per_step, dim=1)
        local_chunks = None
        if self.config.block_type == "gloma":
            local_chunks = LocalChunks(timesteps, mask, self.config.local_window, tokens_per_step)
        if self.config.residual_in_fp32:
            hidden = hidden.float()
        all_hidden, all_attentions = (hidden,), ()
        for layer in self.layers:
            hidden, attention = layer(hidden, mask, local_chunks, output_attentions)
            all_hidden += (hidden,)
            all_attentions += (attention,)
        hidden = self.norm_f(hidden.to(self.norm_f.weight.dtype))
        step_hidden = hidden.reshape(batch, steps, tokens_per_step, -1)[:, :, self.action_token]
        action_preds = self._predict_actions(step_hidden)
        loss = None
        if labels is not None:
            loss = masked_action_loss(action_preds, labels, attention_mask, self.config.is_discrete)
            check_finite_loss(loss)
        output = DecisionMambaOutput(
            loss=loss,
            action_preds=action_preds,
            last_hidden_state=hidden,
            hidden_states=all_hidden if output_hidden_states else None,
            attentions=all_attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    # -- recurrent acting ---------------------------------------------------------------------------------

    @property
    def supports_recurrent_acting(self) -> bool:
        """Whether `init_cache` / `recurrent_step` exist for this config: every Mamba block type, not attention."""
        return self.config.block_type != "attention"

    def init_cache(self, batch: int) -> DecisionMambaCache:
        """Empty recurrent state for `batch` parallel episodes."""
        if not self.supports_recurrent_acting:
            raise ValueError(
                "block_type='attention' has no recurrent state: expected mode='window' to act with it."
            )
        weight = self.predict_action.weight
        return DecisionMambaCache(self.config, batch, weight.device, weight.dtype)

    @torch.inference_mode()
    def recurrent_step(
        self,
        cache: DecisionMambaCache,
        states: torch.Tensor,
        previous_actions: torch.Tensor | None,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """Feed step t of `batch` episodes in lockstep and return the predicted a_t, at constant cost.

        states (batch, *state_shape), previous_actions a_{t-1} ((batch, act_dim) or (batch,); None at t = 0),
        returns_to_go (batch, 1), timesteps (batch,). Equals the parallel forward over the whole prefix.
        """
        config = self.config
        states, returns_to_go, timesteps = states[:, None], returns_to_go[:, None], timesteps.reshape(-1, 1)
        if config.token_layout == "rsa":
            # tokens R_t, s_t; the a_{t-1} token, which completes step t-1, goes first
            parts = [self._embed_returns(returns_to_go, timesteps), self._embed_states(states, timesteps)]
            if previous_actions is not None:
                parts.insert(0, self._embed_actions(previous_actions[:, None], timesteps - 1))
            tokens, step_start = self._finish_tokens(torch.cat(parts, dim=1)), len(parts) - 2
        else:
            if previous_actions is None:
                previous_actions = self._no_action(states.shape[0], states.device)
            else:
                previous_actions = previous_actions[:, None]
            mask = torch.ones_like(timesteps)
            tokens = self.embed_tokens(
                states, None, returns_to_go, timesteps, mask, previous_actions=previous_actions
            )
            step_start = 0
        local_reset = None
        if config.block_type == "gloma":
            local_reset = LocalReset(step_start, (timesteps[:, 0] % config.local_window) == 0)
        hidden = tokens.float() if config.residual_in_fp32 else tokens
        for index, layer in enumerate(self.layers):
            hidden = layer.step(hidden, cache, index, local_reset)
        return self._predict_actions(self.norm_f(hidden[:, -1].to(self.norm_f.weight.dtype)))

    # -- training helpers ---------------------------------------------------------------------------------

    def get_optimizer_param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups with decay on linear and conv weights only (see `weight_decay_param_groups`)."""
        return weight_decay_param_groups(self, weight_decay)

    def policy(self, mode: str = "window", **kwargs):
        """A [`DecisionMambaPolicy`] acting with this model (`mode="window"` or `"recurrent"`)."""
        from .policy_decision_mamba import DecisionMambaPolicy

        return DecisionMambaPolicy(self, mode=mode, **kwargs)


__all__ = [
    "DecisionMambaCache",
    "DecisionMambaModel",
    "DecisionMambaOutput",
    "DecisionMambaPreTrainedModel",
    "masked_action_loss",
    "weight_decay_param_groups",
]
