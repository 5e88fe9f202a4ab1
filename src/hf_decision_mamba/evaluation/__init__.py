"""Evaluating policies in their environments: normalised scores, parallel rollouts, videos, Trainer callback."""

from .callback import EnvironmentEvaluationCallback
from .episode import EpisodeRecording, record_episode
from .results import EVAL_RESULTS_NAME, REPLAY_NAME, flat_metrics, format_report, format_table
from .rollout import POLICY_MODES, VectorEnvPool, build_policy, evaluate_policy, is_policy
from .scores import SCORE_RANGES, ScoreRange, normalized_score, score_range
from .video import VideoInfo, is_browser_playable, probe_video, record_replay, write_mp4

__all__ = [
    "EVAL_RESULTS_NAME",
    "REPLAY_NAME",
    "POLICY_MODES",
    "SCORE_RANGES",
    "EnvironmentEvaluationCallback",
    "EpisodeRecording",
    "ScoreRange",
    "VectorEnvPool",
    "VideoInfo",
    "build_policy",
    "evaluate_policy",
    "flat_metrics",
    "format_report",
    "format_table",
    "is_browser_playable",
    "is_policy",
    "normalized_score",
    "probe_video",
    "record_episode",
    "record_replay",
    "score_range",
    "write_mp4",
]
