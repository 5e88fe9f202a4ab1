"""Replay videos: H.264/yuv420p MP4 (what browsers play; never `mp4v`) written with imageio-ffmpeg."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..envs.protocols import AtariProtocol, GymnasiumProtocol, Protocol

logger = logging.getLogger(__name__)

VIDEO_FPS = 30.0
"""MuJoCo replays render every k-th step so that the video runs near this rate (and in real time)."""


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg reports about a file's first video stream."""

    codec: str
    pix_fmt: str
    width: int
    height: int

    @property
    def browser_playable(self) -> bool:
        """H.264 in yuv420p: the combination every browser decodes."""
        return self.codec == "h264" and self.pix_fmt == "yuv420p"


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 frame from a grayscale or RGB(A) frame, padded to even sides (yuv420p needs them)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    frame = np.ascontiguousarray(frame[:, :, :3].astype(np.uint8, copy=False))
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float) -> Path:
    """Encode `frames` ((H, W) or (H, W, 3) uint8) to an H.264/yuv420p MP4 at `path` with faststart."""
    import imageio_ffmpeg

    if not fps > 0:
        raise ValueError(f"fps={fps!r} is invalid; expected a positive number")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for frame in map(_as_rgb, frames):
        if writer is None:
            size = (frame.shape[1], frame.shape[0])
            writer = imageio_ffmpeg.write_frames(
                str(path), size, fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                macro_block_size=1, output_params=["-preset", "veryfast", "-movflags", "+faststart"],
            )  # fmt: skip
            writer.send(None)
        writer.send(frame)
    if writer is None:
        raise ValueError("frames is empty; expected at least one frame to write a video")
    writer.close()
    return path


_STREAM = re.compile(
    r"Stream #.*?Video:\s*(?P<codec>\w+)[^,]*,\s*(?P<pix_fmt>\w+)[^,]*,\s*(?P<w>\d+)x(?P<h>\d+)"
)


def probe_video(path: str | Path) -> VideoInfo:
    """Codec, pixel format and size of `path`'s video stream, as read by imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise FileNotFoundError(f"no video file at {path}")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)]
    report = subprocess.run(cmd, capture_output=True, text=True, check=False).stderr
    match = _STREAM.search(report)
    if match is None:
        raise ValueError(f"{path} has no readable video stream; ffmpeg said: {report.strip()[-300:]}")
    return VideoInfo(match["codec"], match["pix_fmt"], int(match["w"]), int(match["h"]))


def is_browser_playable(path: str | Path) -> bool:
    """Whether `path` is an H.264/yuv420p video (browsers refuse `mp4v`)."""
    return probe_video(path).browser_playable


def _before(frames: Iterable[np.ndarray], deadline: float) -> Iterator[np.ndarray]:
    """`frames` until `time.perf_counter()` passes `deadline` (the first frame always)."""
    for index, frame in enumerate(frames):
        if index and time.perf_counter() > deadline:
            return
        yield frame


def _gymnasium_frames(
    env_id: str,
    protocol: GymnasiumProtocol,
    seed: int,
    actions: Sequence[np.ndarray],
    deadline: float = math.inf,
):
    """Replay `actions` from `reset(seed)` in an `rgb_array` env until `deadline`: (frames, fps, replayed return)."""
    from ..envs.gym_envs import is_mujoco_task, make_gymnasium_env
    from ..envs.mujoco import set_render_effects

    env = make_gymnasium_env(env_id, protocol, render_mode="rgb_array")
    stride = max(1, round(env.metadata.get("render_fps", VIDEO_FPS) / VIDEO_FPS))
    env.reset(seed=seed)
    if not protocol.render_effects and is_mujoco_task(env_id):
        set_render_effects(env, False)
    frames, total = [env.render()], 0.0
    for step, action in enumerate(actions, start=1):
        _, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if step % stride == 0 or terminated or truncated:
            frames.append(env.render())
        if terminated or truncated or time.perf_counter() > deadline:
            break
    env.close()
    return frames, env.metadata.get("render_fps", VIDEO_FPS) / stride, total


def _atari_frames(
    env_id: str, protocol: AtariProtocol, seed: int, actions: Sequence[np.ndarray], deadline: float = math.inf
):
    """Replay `actions` in a one-env native ALE emitting full RGB screens (same seed, same random stream)
    until `deadline`."""
    from ..envs.atari import ProtocolAtariVectorEnv

    env = ProtocolAtariVectorEnv(env_id, 1, protocol, rgb=True, num_threads=1)
    obs, _ = env.reset(seed=np.array([seed]))
    frames, total = [obs[0, -1]], 0.0
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(np.asarray([action], dtype=np.int64))
        frames.append(obs[0, -1])
        total += float(reward[0])
        if terminated[0] or truncated[0] or time.perf_counter() > deadline:
            break
    env.close()
    return frames, protocol.fps, total


def record_replay(
    env_id: str,
    protocol: Protocol,
    seed: int,
    actions: Sequence[np.ndarray],
    path: str | Path,
    expected_return: float,
    deadline: float = math.inf,
) -> Path:
    """Re-run one evaluated episode (its seed and actions) in a rendering env and write it to `path`.

    Replaying keeps rendering out of the timed, batched rollout; the envs are deterministic given seed and
    actions, so the video shows exactly the evaluated episode (checked against its return). Rendering and
    encoding stop at `deadline` (a `time.perf_counter()` value): the video then shows the episode's start.
    """
    replay = _atari_frames if isinstance(protocol, AtariProtocol) else _gymnasium_frames
    frames, fps, total = replay(env_id, protocol, seed, actions, deadline)
    if time.perf_counter() > deadline:
        return write_mp4(_before(frames, deadline), path, fps)
    if not np.isclose(total, expected_return, rtol=1e-5, atol=1e-6):
        logger.warning(
            "The replay of %s seed %d returned %.3f, not %.3f.", env_id, seed, total, expected_return
        )
    return write_mp4(frames, path, fps)
