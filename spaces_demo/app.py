"""Decision Mamba playground: pick a checkpoint, an environment, a seed and a target return; watch it play.

Run locally with `python spaces_demo/app.py` (host and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
Settings: DMAMBA_SPACE_MODEL (default model), DMAMBA_SPACE_TIME_LIMIT (seconds per episode, play and video),
DMAMBA_SPACE_TORCH_THREADS (torch threads while playing, default 1), DMAMBA_SPACE_LOCAL_ROOT (the folder under
which visitors may play local checkpoint folders; unset: only the default model's folder and Hub ids).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from hf_decision_mamba.envs import env_family, resolve_env_id
from hf_decision_mamba.evaluation import POLICY_MODES, score_range
from hf_decision_mamba.evaluation.episode import EpisodeRecording, record_episode

logger = logging.getLogger("dmamba_space")

MAX_EPISODE_STEPS = 1000
"""Longest episode a visitor can ask for (a full MuJoCo episode; about a minute of Atari play)."""
TIME_LIMIT_S = float(os.environ.get("DMAMBA_SPACE_TIME_LIMIT", "45"))
"""Seconds per episode, play and video together; play stops there (flagged) and the video shows what was
rendered and encoded by then."""
LOCAL_ROOT_VARIABLE = "DMAMBA_SPACE_LOCAL_ROOT"
MAX_SEED = 1_000_000
CACHE_SIZE = 32
QUEUE_SIZE = 16
RENDER_SIZE = 320
"""MuJoCo video frames are RENDER_SIZE x RENDER_SIZE, rendered without shadows and reflections (4x faster in
software OpenGL: the video took 18-23 s for 2.5-3 s of play under load, rendering being most of it)."""
TORCH_THREADS = int(os.environ.get("DMAMBA_SPACE_TORCH_THREADS", "1"))
"""Batch-1 acting is latency-bound: one thread is 10-20x faster than two on a busy 2-vCPU machine."""
TARGET_FALLBACK = (-1_000.0, 1_000_000.0)
"""Accepted target returns in environments without normalisation constants."""
SUPPORTED_MODEL_TYPES = ("decision_mamba", "decision_transformer")
DEFAULT_HUB_MODEL = "hf-decision-mamba/dmamba-hopper-quickstart"
ENV_CHOICES = [
    "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5",
    "ALE/Breakout-v5", "ALE/Pong-v5", "ALE/Qbert-v5", "ALE/Seaquest-v5",
]  # fmt: skip
DEFAULT_TARGETS = {
    "Hopper-v5": 3600.0, "HalfCheetah-v5": 6000.0, "Walker2d-v5": 5000.0,
    "ALE/Breakout-v5": 90.0, "ALE/Pong-v5": 20.0, "ALE/Qbert-v5": 14000.0, "ALE/Seaquest-v5": 1150.0,
}  # fmt: skip
"""The evaluation targets of the Decision Transformer and Decision Mamba papers."""
VIDEO_DIR = Path(tempfile.gettempdir()) / "dmamba_space"


def default_model() -> str:
    """DMAMBA_SPACE_MODEL, else a quick start output found here (`outputs/quickstart`), else the Hub default."""
    if os.environ.get("DMAMBA_SPACE_MODEL"):
        return os.environ["DMAMBA_SPACE_MODEL"]
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "outputs" / "quickstart" / "config.json").is_file():
            return str(root / "outputs" / "quickstart")
    return DEFAULT_HUB_MODEL


@dataclass(frozen=True)
class Request:
    """A validated episode request; also the cache key."""

    model: str
    env_id: str
    seed: int
    target_return: float
    mode: str
    max_steps: int


def _number(value: Any) -> float:
    """`value` as a float; NaN for anything that is not an int or a float (bools included)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in [low, high], or a ValueError saying so."""
    number = _number(value)
    if not (math.isfinite(number) and number == int(number) and low <= number <= high):
        raise ValueError(f"The {name} must be a whole number from {low} to {high}; got {value!r}.")
    return int(number)


def target_bounds(env_id: str) -> tuple[float, float]:
    """Accepted target returns: from the random score (or 0) to three times the expert/gamer score."""
    constants = score_range(env_id)
    if constants is None:
        return TARGET_FALLBACK
    return min(0.0, constants.low), max(3.0 * constants.high, 100.0)


def _target(value: Any, env_id: str) -> float:
    """`value` as a target return within `target_bounds(env_id)`, or a ValueError saying so."""
    low, high = target_bounds(env_id)
    number = _number(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(
            f"The target return for {env_id} must be a number from {low:g} to {high:g}; got {value!r}."
        )
    return number


def checkpoint_env(model: Any) -> str | None:
    """The environment a checkpoint was trained in (its config's `env_id`), for a local folder or a Hub model
    already cached here; None when it names none or cannot be read (the Space never downloads for this)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_model_key(model), local_files_only=True)
        return resolve_env_id(config.env_id) if getattr(config, "env_id", None) else None
    except Exception:  # any unreadable model: the list stays the default one
        return None


def env_choices(model: Any) -> list[str]:
    """The environment list: the checkpoint's own environment first (any Gymnasium task), then the usual ones."""
    own = checkpoint_env(model)
    return [own, *[env for env in ENV_CHOICES if env != own]] if own else list(ENV_CHOICES)


def update_env_choices(model: str, current: str) -> Any:
    """A new model: offer its environment first and select it (else keep the current choice)."""
    choices = env_choices(model)
    return gr.update(choices=choices, value=choices[0] if checkpoint_env(model) else current)


def local_roots() -> list[Path]:
    """Folders whose checkpoints visitors may play: DMAMBA_SPACE_LOCAL_ROOT, and the default model's folder."""
    roots = [os.environ.get(LOCAL_ROOT_VARIABLE, ""), default_model()]
    return [Path(root).expanduser().resolve() for root in roots if root and Path(root).expanduser().is_dir()]


def _looks_local(text: str) -> bool:
    """A path rather than a Hub id: absolute, relative to here or home, or naming something on this disk."""
    return text.startswith(("/", ".", "~", "\\")) or Path(text).expanduser().exists()


def _model_key(model: Any) -> str:
    """The model as typed (stripped), or the absolute path of a local folder under an allowed root."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError("Enter a model: a Hugging Face Hub id (user/name) or a local checkpoint folder.")
    text = model.strip()
    if not _looks_local(text):
        return text
    path = Path(text).expanduser().resolve()
    if not any(path == root or path.is_relative_to(root) for root in local_roots()):
        raise ValueError(
            f"Local folder {text!r} is not playable here: this Space plays Hub ids (user/name) and local folders "
            f"under {LOCAL_ROOT_VARIABLE} only."
        )
    return str(path)


def parse_request(model: Any, env_id: Any, seed: Any, target: Any, mode: Any, max_steps: Any) -> Request:
    """Validate the form's values; every problem is a ValueError with a sentence for the visitor."""
    if mode not in POLICY_MODES:
        raise ValueError(f"The inference mode must be one of {', '.join(POLICY_MODES)}; got {mode!r}.")
    try:
        resolved = resolve_env_id(env_id)
    except ValueError:
        raise ValueError(
            f"Unknown environment {env_id!r}: pick one of {', '.join(ENV_CHOICES)}, another Atari game or "
            "any registered Gymnasium id."
        ) from None
    return Request(
        _model_key(model), resolved, _as_int("seed", seed, 0, MAX_SEED), _target(target, resolved), mode,
        _as_int("episode step limit", max_steps, 1, MAX_EPISODE_STEPS),
    )  # fmt: skip


@functools.lru_cache(maxsize=2)
def load_checkpoint(name: str) -> Any:
    """A Decision Mamba or Decision Transformer from a local folder or the Hub; never runs remote code."""
    from transformers import AutoConfig, AutoModel

    import hf_decision_mamba  # noqa: F401  (registers Decision Mamba with the Auto classes)

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as error:
        logger.info("Could not load %s: %s", name, error)
        raise ValueError(
            f"Could not load model {name!r}: it is neither a local checkpoint folder nor a model this Space "
            "can download from the Hugging Face Hub."
        ) from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{name!r} is a {config.model_type!r} model; this Space plays Decision Mamba checkpoints."
        )
    return AutoModel.from_pretrained(name, config=config, trust_remote_code=False).eval()


def _video_path(request: Request) -> Path:
    """Where the episode's video goes: one file per request."""
    return VIDEO_DIR / f"{hashlib.sha1(repr(request).encode()).hexdigest()[:16]}.mp4"


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_request(request: Request) -> EpisodeRecording:
    """Play the requested episode and record its video."""
    mujoco = env_family(request.env_id) == "mujoco"
    kwargs = (
        {"render_width": RENDER_SIZE, "render_height": RENDER_SIZE, "render_effects": False} if mujoco else {}
    )
    with torch_threads(TORCH_THREADS):
        return record_episode(
            load_checkpoint(request.model), request.env_id, request.seed, request.target_return, request.mode,
            max_episode_steps=request.max_steps, time_limit_s=TIME_LIMIT_S, video_path=_video_path(request),
            **kwargs,
        )  # fmt: skip


class EpisodeCache:
    """The last `size` episodes by request, computed one at a time; evicting one deletes its video."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Request, EpisodeRecording] = OrderedDict()
        self.lock = threading.Lock()

    def get(
        self, request: Request, run: Callable[[Request], EpisodeRecording]
    ) -> tuple[EpisodeRecording, bool]:
        """The recording for `request` and whether it came from the cache."""
        with self.lock:
            if request in self.entries:
                self.entries.move_to_end(request)
                return self.entries[request], True
            self.entries[request] = recording = run(request)
            while len(self.entries) > self.size:
                _, evicted = self.entries.popitem(last=False)
                if evicted.video is not None:
                    evicted.video.unlink(missing_ok=True)
            return recording, False


CACHE = EpisodeCache(CACHE_SIZE)


def plot_returns(recording: EpisodeRecording) -> Figure:
    """Return-to-go the policy conditioned on (left axis) and the reward it got (right axis), per step."""
    figure = Figure(figsize=(7.0, 3.2), layout="constrained")
    left = figure.subplots()
    steps = np.arange(recording.length)
    left.plot(steps, recording.returns_to_go, color="tab:blue", label="return-to-go")
    left.set_xlabel("step")
    left.set_ylabel("return-to-go", color="tab:blue")
    right = left.twinx()
    right.plot(steps, recording.rewards, color="tab:orange", linewidth=0.8, label="reward")
    right.set_ylabel("reward", color="tab:orange")
    left.set_title(f"Return-to-go (target {recording.target_return:g}) and reward per step")
    return figure


def plot_attention(recording: EpisodeRecording) -> Figure:
    """One heatmap per layer: |hidden attention| between the tokens of the last step's context window
    (K steps of return, state and action tokens)."""
    layers = np.abs(recording.attention)
    columns = min(3, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure = Figure(figsize=(max(3.3 * columns + 0.8, 5.0), 3.2 * rows + 0.3), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for index, axis in enumerate(axes):
        if index >= len(layers):
            axis.axis("off")
            continue
        image = axis.imshow(layers[index], cmap="magma", norm=PowerNorm(0.4, vmin=0.0))
        axis.set_title(f"layer {index + 1}")
        axis.set_xlabel("attended token (R, s, a per step)")
        axis.set_ylabel("token")
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.suptitle(f"Hidden attention at step {recording.length}")
    return figure


def summary(recording: EpisodeRecording, cached: bool) -> str:
    """A Markdown line with the return, the normalised score, how the episode ended and the timings."""
    constants = score_range(recording.env_id)
    score = recording.normalized_score
    score_text = f"{score:.1f} · {constants.reference}" if score is not None and constants else "n/a"
    ending = "terminated" if recording.terminated else "time limit" if recording.timed_out else "step limit"
    cut = " (cut at the time limit)" if recording.video_cut else ""
    timing = "cached" if cached else f"play {recording.rollout_s:.1f} s, video {recording.video_s:.1f} s{cut}"
    return (
        f"**Return** {recording.total_return:.1f} · **normalised score** {score_text} · "
        f"{recording.length} steps ({ending}) · {recording.mode} mode, seed {recording.seed} · {timing}"
    )


def play(model: str, env_id: str, seed: float, target: float, mode: str, max_steps: float) -> tuple:
    """Run (or fetch from the cache) one episode; returns video, return, score, summary and two plots."""
    try:
        request = parse_request(model, env_id, seed, target, mode, max_steps)
        recording, cached = CACHE.get(request, run_request)
    except ValueError as error:
        raise gr.Error(html.escape(str(error), quote=False), duration=None, print_exception=False) from None
    except Exception as error:
        logger.exception("Episode failed")
        message = f"The episode failed ({type(error).__name__}: {error}). Try another seed or model."
        raise gr.Error(html.escape(message, quote=False), duration=None, print_exception=False) from None
    score = recording.normalized_score
    return (
        str(recording.video), round(recording.total_return, 3), None if score is None else round(score, 3),
        summary(recording, cached), plot_returns(recording), plot_attention(recording),
    )  # fmt: skip


def clear_results() -> tuple:
    """Empty outputs, shown as soon as a new episode is asked for: a failed request must not leave the previous
    episode on screen as if it were its result."""
    return None, None, None, "", None, None


def suggest_target(env_id: str, current: float) -> float:
    """The papers' target return for `env_id`, or `current` for other environments."""
    try:
        return DEFAULT_TARGETS.get(resolve_env_id(env_id), current)
    except ValueError:
        return current


INTRO = """# Decision Mamba playground
Pick a checkpoint (a Hub id or a local folder such as the output of `dmamba quickstart`), an environment, an
episode seed and the return to condition on; the policy plays one episode. Episodes are capped at
{steps} steps and {seconds:g} s of play and video, run one at a time, and are cached per (model, environment, seed,
target, mode, step limit)."""


def build_demo() -> gr.Blocks:
    """The page (inputs left, video and numbers right, plots below), queued: one episode at a time."""
    with gr.Blocks(title="Decision Mamba playground", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO.format(steps=MAX_EPISODE_STEPS, seconds=TIME_LIMIT_S))
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Textbox(default_model(), label="Model (Hub id or local folder)")
                choices = env_choices(default_model())
                env_id = gr.Dropdown(choices, value=choices[0], label="Environment", allow_custom_value=True)
                seed = gr.Number(0, label=f"Episode seed (0 to {MAX_SEED})", precision=0)
                target = gr.Number(suggest_target(choices[0], 0.0), label="Target return")
                mode = gr.Radio(list(POLICY_MODES), value=POLICY_MODES[0], label="Inference mode")
                max_steps = gr.Slider(
                    1, MAX_EPISODE_STEPS, MAX_EPISODE_STEPS, step=1, label="Episode step limit"
                )
                button = gr.Button("Play episode", variant="primary", elem_id="play-button")
            with gr.Column(scale=3):
                video = gr.Video(label="Episode (H.264)", autoplay=True, loop=True, elem_id="episode-video")
                with gr.Row():
                    total = gr.Number(label="Return", interactive=False)
                    score = gr.Number(label="Normalised score", interactive=False, elem_id="score")
                details = gr.Markdown(label="Summary", elem_id="summary")
        with gr.Row():
            returns_plot = gr.Plot(label="Return-to-go and reward over time", show_label=False)
            attention_plot = gr.Plot(label="Hidden attention of the last step", show_label=False)
        inputs = [model, env_id, seed, target, mode, max_steps]
        outputs = [video, total, score, details, returns_plot, attention_plot]
        button.click(clear_results, None, outputs, queue=False, api_visibility="private").then(
            play, inputs, outputs, api_name="play"
        )
        model.change(
            update_env_choices, [model, env_id], env_id, api_visibility="private", concurrency_limit=None
        )
        env_id.change(
            suggest_target, [env_id, target], target, api_name="suggest_target", concurrency_limit=None
        )  # instant, so it never waits behind an episode
    return demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
CSS = "#summary { min-height: 2em; }"


def main() -> None:
    """Launch the app (host and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)."""
    logging.basicConfig(level=logging.INFO)
    build_demo().launch(theme=THEME, css=CSS)


if __name__ == "__main__":
    main()
