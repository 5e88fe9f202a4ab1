"""Decision Mamba against `transformers.DecisionTransformerModel`, measured side by side in one run.

    python scripts/benchmark.py                      # the issue's full run on whatever device is present
    python scripts/benchmark.py --presets dmamba-mujoco --contexts 20 100 --num-envs 1
    python scripts/benchmark.py --render benchmarks/benchmark_cpu.json   # re-report a saved run

Training step = forward, backward and AdamW step on a (batch, K) window (3K tokens), for DT and for every
Decision Mamba preset and scan backend, at matched sizes (hidden, layers). Each (model, K) runs in its own
fresh process, which isolates allocator effects and gives it its own peak-memory figure: peak MiB is the
highest memory the training steps reach above what the built model, batch and optimizer already hold
(`torch.cuda.max_memory_allocated` on a GPU; on a CPU the RSS high-water mark, see `PeakMemory`). Step time
is the median of `--repeats` steps after 2 warm-up steps, with fewer repeats when they would not fit
`--config-seconds`, and a single step when the first one takes longer than `--max-step-seconds`.

The default batch is 16, not the presets' 64: at K=1000 (3000 tokens) DT's attention matrices alone take
several GB per layer at batch 64 on a CPU (tens of GB in total), which is more than the machines these
numbers are meant for; every ratio compares the same batch anyway.

Acting = one `policy.act` for a batch of environments through a whole episode: DT recomputes its K-step
window, Decision Mamba either does the same (`window`) or feeds only the new tokens (`recurrent`). Latency
is the median of the 10 calls from each probe step, pooled over up to 5 episodes when they fit in
`--acting-seconds` (cheap policies get several, so a slow second of the machine does not decide a probe).
Every ratio compares numbers taken in this same run.

Run it on an otherwise idle machine, without `OMP_WAIT_POLICY=PASSIVE` (which `make test` sets for busy CI
machines): with sleeping OpenMP threads the fused CPU scan's step at K=300 took 1.8x as long.

Writes the measured rows as JSON (`--results`), this device's section of `--markdown` (BENCHMARKS.md: tables
and the issue's targets, judged for every preset; the rest of the file is kept) and `--plot` (PNG), then
prints the ratio table last. The full default run took an hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import DecisionTransformerConfig, DecisionTransformerModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel, DecisionMambaPolicy  # noqa: E402
from hf_decision_mamba.policy_decision_mamba import MODES  # noqa: E402
from hf_decision_mamba.presets import PRESETS  # noqa: E402
from hf_decision_mamba.selective_scan import BACKENDS, available_backends  # noqa: E402

STATE_DIM, ACT_DIM = 11, 3
TASK_FIELDS = (
    "env_id",
    "target_return",
    "hidden_size",
    "num_hidden_layers",
    "max_ep_len",
    "state_dim",
    "act_dim",
)
"""Preset fields the benchmark overrides or that only name the task: presets differing only in these are one
model here."""
PROBE_CALLS = 10  # `policy.act` calls timed from each probe step
MAX_EPISODES = 5  # acting episodes per policy, when they fit in --acting-seconds
RESULT_MARKER = "@@benchmark-result@@ "
TOO_SLOW = "1 step (too slow to repeat)"
NOT_ON_THIS_DEVICE = {
    "cuda": "not yet measured (no GPU in this run)",
    "cpu": "not yet measured (no CPU run; use --device cpu)",
}


# -- models and inputs ---------------------------------------------------------------------------------------


def mujoco_presets() -> list[str]:
    """Every preset with a linear state encoder and continuous actions (what the MuJoCo sizes fit), less those
    that differ from an earlier one only in their task (`TASK_FIELDS`): at the benchmark's size they are the
    same model."""
    names, seen = [], set()
    for name, preset in PRESETS.items():
        config = preset["config"]
        if config["state_encoder"] != "linear" or config["action_space"] != "continuous":
            continue
        architecture = json.dumps({k: v for k, v in config.items() if k not in TASK_FIELDS}, sort_keys=True)
        if architecture not in seen:
            seen.add(architecture)
            names.append(name)
    return names


def dt_model(hidden: int, layers: int, max_ep_len: int, steps: int) -> DecisionTransformerModel:
    """A Decision Transformer (GPT-2, one head) with room for `steps` timesteps of 3 tokens."""
    config = DecisionTransformerConfig(
        state_dim=STATE_DIM,
        act_dim=ACT_DIM,
        hidden_size=hidden,
        n_layer=layers,
        n_head=1,
        max_ep_len=max_ep_len,
    )
    config.n_positions = max(config.n_positions, 3 * steps)
    return DecisionTransformerModel(config)


def dm_model(preset: str, hidden: int, layers: int, max_ep_len: int, backend: str) -> DecisionMambaModel:
    """A Decision Mamba with `preset`'s architecture at DT's size, on scan `backend`."""
    config = DecisionMambaConfig.from_preset(
        preset,
        state_dim=STATE_DIM,
        act_dim=ACT_DIM,
        hidden_size=hidden,
        num_hidden_layers=layers,
        max_ep_len=max_ep_len,
        scan_backend=backend,
    )
    return DecisionMambaModel(config)


def window_batch(batch: int, steps: int, device: str) -> dict:
    """Random MuJoCo-shaped training inputs for a (batch, steps) window."""
    return {
        "states": torch.randn(batch, steps, STATE_DIM, device=device),
        "actions": torch.rand(batch, steps, ACT_DIM, device=device) * 2 - 1,
        "rewards": torch.randn(batch, steps, 1, device=device),
        "returns_to_go": torch.randn(batch, steps, 1, device=device),
        "timesteps": torch.arange(steps, device=device).expand(batch, steps),
        "attention_mask": torch.ones(batch, steps, dtype=torch.long, device=device),
    }


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall times cover it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- peak memory ------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    """A `VmXXX` field of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_rss_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux `clear_refs` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_kib("VmHWM") <= _proc_status_kib("VmRSS") + 1024
    except (OSError, KeyError, ValueError):
        return False


def _max_rss_bytes() -> int:
    """Lifetime peak RSS of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Peak memory above a baseline taken at `start()`, in MiB, by the best means the device offers.

    CUDA: the caching allocator's peak (`max_memory_allocated`) above what was allocated at `start()`.
    Linux CPU: the RSS high-water mark (VmHWM, reset at `start()` through /proc/self/clear_refs) above the
    RSS at `start()`. Elsewhere: the growth of the lifetime peak RSS (ru_maxrss), a lower bound.
    """

    METHODS = {
        "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the first step",
        "vmhwm": "peak RSS (VmHWM, reset through /proc/self/clear_refs) above the RSS before the first step",
        "ru_maxrss": "growth of the process's lifetime peak RSS (ru_maxrss) over the steps, a lower bound",
    }

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = ""
        self.baseline = 0

    def start(self) -> None:
        """Take the baseline and reset the peak."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.method, self.baseline = "cuda", torch.cuda.memory_allocated()
        elif _reset_rss_peak():
            self.method, self.baseline = "vmhwm", _proc_status_kib("VmRSS") * 1024
        else:
            self.method, self.baseline = "ru_maxrss", _max_rss_bytes()

    def peak_mib(self) -> float:
        """Peak since `start()` above the baseline, in MiB."""
        if self.method == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.method == "vmhwm":
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            peak = _max_rss_bytes()
        return max(peak - self.baseline, 0) / 2**20


# -- training step (one configuration per process) -----------------------------------------------------------


def training_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: str
) -> float:
    """Seconds of one forward + backward + AdamW step."""
    sync(device)
    start = time.perf_counter()
    preds = model(**batch).action_preds
    loss = ((preds - batch["actions"]) ** 2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def build_model(spec: dict) -> torch.nn.Module:
    """The model a worker `spec` names: DT, or a Decision Mamba preset on a scan backend."""
    if spec["model"] == "DT":
        return dt_model(spec["hidden"], spec["layers"], spec["max_ep_len"], spec["K"])
    return dm_model(spec["preset"], spec["hidden"], spec["layers"], spec["max_ep_len"], spec["backend"])


def page_in(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: str) -> None:
    """One step on a (1, 2) slice, then drop gradients and optimizer state: libraries and lazily set-up
    state are resident before the baseline, so the peak counts the step's tensors."""
    training_step(model, optimizer, {key: value[:1, :2] for key, value in batch.items()}, device)
    optimizer.zero_grad(set_to_none=True)
    optimizer.state.clear()
    gc.collect()


def measure_training(spec: dict) -> dict:
    """Step time and peak memory of one (model, K) training configuration, in this process."""
    device = spec["device"]
    torch.manual_seed(0)
    model = build_model(spec).to(device).train()
    batch = window_batch(spec["batch_size"], spec["K"], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    page_in(model, optimizer, batch, device)
    memory = PeakMemory(device)
    memory.start()
    times = [training_step(model, optimizer, batch, device)]
    if times[0] > spec["max_step_seconds"]:
        note = TOO_SLOW
    else:
        second = training_step(model, optimizer, batch, device)  # the second warm-up step sizes the repeats
        repeats = max(1, min(spec["repeats"], int(spec["config_seconds"] / second)))
        times = [training_step(model, optimizer, batch, device) for _ in range(repeats)]
        fewer = "" if repeats == spec["repeats"] else " (fewer to fit --config-seconds)"
        note = f"median of {repeats}{fewer}"
    return {
        "seconds": statistics.median(times),
        "steps": len(times),
        "note": note,
        "peak_mib": memory.peak_mib(),
        "memory_method": memory.method,
    }


def describe_error(error: BaseException) -> str:
    """A one-line reason for a failed configuration, naming out-of-memory plainly."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    oom = isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in message.lower()
    if oom or "can't allocate memory" in message:
        return f"out of memory ({message[:80]})"
    return f"{type(error).__name__}: {message[:100]}"


def worker_main(spec_json: str) -> int:
    """Run one configuration and print its result as one JSON line after `RESULT_MARKER`."""
    try:
        result = measure_training(json.loads(spec_json))
    except Exception as error:  # any failure becomes a row saying why
        result = {"error": describe_error(error)}
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


def failure_reason(process: subprocess.CompletedProcess) -> str:
    """Why a worker process ended without a result."""
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    return f"exit {process.returncode}: {lines[-1][:100] if lines else 'no output'}"


def run_worker(spec: dict, timeout: float) -> dict:
    """Measure `spec` in a fresh interpreter running this script with `--worker`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(process.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    return {"error": failure_reason(process)}


def worker_spec(args: argparse.Namespace, steps: int, preset: str | None, backend: str | None) -> dict:
    """What a worker needs to rebuild and time one configuration."""
    keys = ("device", "batch_size", "hidden", "layers", "max_ep_len", "repeats")
    spec = {key: getattr(args, key) for key in keys}
    spec.update(max_step_seconds=args.max_step_seconds, config_seconds=args.config_seconds)
    return {
        **spec,
        "K": steps,
        "model": "DT" if preset is None else "DM",
        "preset": preset,
        "backend": backend,
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell, '-' when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def training_rows(args: argparse.Namespace) -> list[dict]:
    """DT and every Decision Mamba preset x backend at every K, each measured in its own process."""
    rows = []
    for steps in args.contexts:
        reference: dict = {}
        configurations = [(None, None)] + [(p, b) for p in args.presets for b in args.backends]
        for preset, backend in configurations:
            result = run_worker(worker_spec(args, steps, preset, backend), args.worker_timeout)
            row = {"model": "DT" if preset is None else f"{preset} [{backend}]", "preset": preset}
            row.update(backend=backend, K=steps, tokens=3 * steps, **result)
            reference = reference or row
            row["x_dt"] = ratio(row.get("seconds"), reference.get("seconds"))
            row["x_dt_memory"] = ratio(row.get("peak_mib"), reference.get("peak_mib"))
            rows.append(row)
            print(progress_line(row), flush=True)
    return rows


def progress_line(row: dict) -> str:
    """One printed line per finished training configuration."""
    head = f"train K={row['K']:<5} {row['model']:<36}"
    if "error" in row:
        return f"{head} failed: {row['error']}"
    return (
        f"{head} {row['seconds'] * 1e3:10.1f} ms  x{fmt(row['x_dt'])} DT   "
        f"peak {row['peak_mib']:8.1f} MiB  x{fmt(row['x_dt_memory'])} DT   ({row['note']})"
    )


# -- acting latency -----------------------------------------------------------------------------------------


def time_acting(
    policy: DecisionMambaPolicy, num_envs: int, steps: int, probes: list[int], seconds: float = 0.0
) -> tuple[dict[int, float], int]:
    """Median seconds of `policy.act` over the `PROBE_CALLS` calls from each probe step, pooled over episodes,
    and the number of episodes. Episodes repeat (at most `MAX_EPISODES`) while the next one fits in `seconds`:
    a machine can have slow phases lasting a second or more, which a single episode's 10 calls at a probe cannot
    average out."""
    samples: dict[int, list[float]] = {probe: [] for probe in probes}
    start, episodes = time.perf_counter(), 0
    while episodes < MAX_EPISODES:
        episode_start = time.perf_counter()
        for probe, times in episode_latencies(policy, num_envs, steps, probes).items():
            samples[probe].extend(times)
        episodes += 1
        now = time.perf_counter()
        if (now - start) + (now - episode_start) > seconds:  # the next episode would not fit
            break
    return {probe: statistics.median(values) for probe, values in samples.items()}, episodes


def episode_latencies(
    policy: DecisionMambaPolicy, num_envs: int, steps: int, probes: list[int]
) -> dict[int, list[float]]:
    """Seconds of each of the `PROBE_CALLS` `policy.act` calls from each probe step of one episode."""
    policy.reset(num_envs, target_return=3600.0)
    rng = np.random.default_rng(0)
    observation = rng.normal(size=(num_envs, STATE_DIM)).astype(np.float32)
    reward = None
    samples: dict[int, list[float]] = {probe: [] for probe in probes}
    for step in range(steps):
        start = time.perf_counter()
        policy.act(observation, reward)
        elapsed = time.perf_counter() - start
        for probe in probes:
            if probe <= step < probe + PROBE_CALLS:
                samples[probe].append(elapsed)
        reward = np.ones(num_envs, np.float32)
    return samples


def acting_row(make_policy: Callable[[], DecisionMambaPolicy], label: dict, args: argparse.Namespace) -> dict:
    """Latency at every probe for one policy, or the reason it failed."""
    try:
        latency, episodes = time_acting(
            make_policy(), label["envs"], args.episode_steps, args.probes, args.acting_seconds
        )
    except Exception as error:  # one failing policy must not end the run
        return {**label, "error": describe_error(error)}
    first, last = args.probes[0], args.probes[-1]
    return {**label, "latency": latency, "growth": latency[last] / latency[first], "episodes": episodes}


def acting_policies(
    args: argparse.Namespace, steps: int
) -> list[tuple[dict, Callable[[], DecisionMambaPolicy]]]:
    """(label, policy factory) for DT's window policy, then each preset's window and recurrent policies."""
    torch.manual_seed(0)
    dt = dt_model(args.hidden, args.layers, args.max_ep_len, steps).to(args.device)
    make_dt = partial(DecisionMambaPolicy, dt, mode="window", rtg_scale=1000.0, context_length=steps)
    policies = [({"policy": "DT window", "preset": None, "mode": "window"}, make_dt)]
    for preset in args.presets:
        model = dm_model(preset, args.hidden, args.layers, args.max_ep_len, "auto").to(args.device)
        for mode in MODES:
            label = {"policy": f"{preset} {mode}", "preset": preset, "mode": mode}
            policies.append((label, partial(model.policy, mode=mode, context_length=steps)))
    return policies


def acting_rows(args: argparse.Namespace) -> list[dict]:
    """Every policy's latency along an episode, per env count and context, with ratios to DT's window."""
    rows = []
    first = args.probes[0]
    for num_envs in args.num_envs:
        for steps in args.acting_contexts:
            reference: dict = {}
            for label, make_policy in acting_policies(args, steps):
                row = acting_row(make_policy, {**label, "envs": num_envs, "K": steps}, args)
                reference = reference or row
                row["x_dt"] = ratio(latency_at(row, first), latency_at(reference, first))
                rows.append(row)
                print(acting_progress_line(row, args.probes), flush=True)
    return rows


def latency_at(row: dict, probe: int) -> float | None:
    """Seconds per `act` at `probe`, None for a failed row."""
    return row.get("latency", {}).get(probe)


def acting_progress_line(row: dict, probes: list[int]) -> str:
    """One printed line per finished acting measurement."""
    head = f"act envs={row['envs']:<3} K={row['K']:<4} {row['policy']:<28}"
    if "error" in row:
        return f"{head} failed: {row['error']}"
    return (
        f"{head} {row['latency'][probes[0]] * 1e3:8.2f} ms  x{fmt(row['x_dt'])} DT window; "
        f"step {probes[-1]} / step {probes[0]} = {row['growth']:.2f}"
    )


# -- the targets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingTarget:
    """A bound on a Decision Mamba / DT training ratio (`x_dt` or `x_dt_memory`) over a range of K."""

    device: str
    text: str
    key: str
    bound: float
    k_from: int
    k_to: int | None
    throughput: bool = False

    def contexts(self, measured: list[int]) -> list[int]:
        """The measured contexts this target is about."""
        return [k for k in measured if k >= self.k_from and (self.k_to is None or k <= self.k_to)]

    def show(self, value: float) -> str:
        """A measured ratio as the target states it."""
        return f"{1 / value:.2f}x DT throughput" if self.throughput else f"{value:.2f}x DT"


GPU = "GPU, with the kernels:"
TRAINING_TARGETS = (
    TrainingTarget("cuda", f"{GPU} training throughput >= DT's at K=20", "x_dt", 1.0,
                   k_from=20, k_to=20, throughput=True),
    TrainingTarget("cuda", f"{GPU} training throughput >= 3x DT's at K >= 300", "x_dt", 1 / 3,
                   k_from=300, k_to=None, throughput=True),
    TrainingTarget("cuda", f"{GPU} peak memory <= 0.5x DT's at K=300", "x_dt_memory", 0.5,
                   k_from=300, k_to=300),
    TrainingTarget("cpu", "CPU: training-step time <= 1.0x DT's at K=100", "x_dt", 1.0,
                   k_from=100, k_to=100),
)  # fmt: skip
FLAT_BOUND = 1.2
DEVICE_NAMES = {"cuda": "GPU", "cpu": "CPU"}


def target_row(text: str, measured: str, status: str) -> dict:
    """One line of the targets table."""
    return {"target": text, "measured": measured, "status": status}


def verdict(met: dict[str, bool]) -> str:
    """'met' or 'missed' when every preset agrees, else which presets meet the target."""
    if all(met.values()) or not any(met.values()):
        return "met" if all(met.values()) else "missed"
    return f"met by {sum(met.values())} of {len(met)} presets ({', '.join(p for p, ok in met.items() if ok)})"


def training_target(target: TrainingTarget, training: list[dict], args: argparse.Namespace) -> dict:
    """Judge one training target on every preset, with the device's fastest measured scan backend."""
    if target.device != args.device_type:
        return target_row(target.text, "-", NOT_ON_THIS_DEVICE[target.device])
    backend = next((name for name in BACKENDS if name in args.backends), None)
    if target.device == "cuda" and backend != "cuda":
        return target_row(target.text, "-", "not yet measured (mamba_ssm kernels not available)")
    contexts = target.contexts(args.contexts)
    if not contexts:
        return target_row(target.text, "-", f"not yet measured (no such K in --contexts {args.contexts})")
    measured, met = [], {}
    for preset in args.presets:
        model = f"{preset} [{backend}]"
        values = {row["K"]: row.get(target.key) for row in training if row["model"] == model}
        values = {k: values.get(k) for k in contexts}
        if None in values.values():
            return target_row(target.text, f"{model}: a run or DT's failed", "not measured (see the table)")
        measured.append(f"{model}: " + ", ".join(f"K={k}: {target.show(v)}" for k, v in values.items()))
        met[preset] = all(value <= target.bound for value in values.values())
    return target_row(target.text, "; ".join(measured), verdict(met))


def flat_acting_target(device: str, acting: list[dict], args: argparse.Namespace) -> dict:
    """Judge 'recurrent acting latency flat in episode length' on one device, for every preset."""
    first, last = args.probes[0], args.probes[-1]
    text = f"{DEVICE_NAMES[device]}: recurrent acting latency step {last} / step {first} <= {FLAT_BOUND}"
    if device != args.device_type:
        return target_row(text, "-", NOT_ON_THIS_DEVICE[device])
    rows = [row for row in acting if row["mode"] == "recurrent"]
    if not rows or any("error" in row for row in rows):
        return target_row(text, "-", "not measured (see the acting table)")
    measured, met = [], {}
    for preset in args.presets:
        ours = [row for row in rows if row["preset"] == preset]
        growth = ", ".join(f"{envs_text(row['envs'])} K={row['K']}: {row['growth']:.2f}" for row in ours)
        measured.append(f"{preset}: {growth}")
        met[preset] = all(row["growth"] <= FLAT_BOUND for row in ours)
    return target_row(text, "; ".join(measured), verdict(met))


def target_rows(training: list[dict], acting: list[dict], args: argparse.Namespace) -> list[dict]:
    """Every target of the issue, measured here or marked as not yet measured."""
    rows = [training_target(target, training, args) for target in TRAINING_TARGETS]
    return rows + [flat_acting_target(device, acting, args) for device in DEVICE_NAMES]


# -- reports ------------------------------------------------------------------------------------------------


def envs_text(num_envs: int) -> str:
    """'1 env', '64 envs'."""
    return f"{num_envs} env" + ("" if num_envs == 1 else "s")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]


def cpu_model() -> str:
    """The CPU's model name."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_line(args: argparse.Namespace) -> str:
    """Device, threads, library versions and date of this run."""
    if args.device_type == "cuda":
        gpu = torch.cuda.get_device_name(args.device)
        hardware = f"GPU {gpu} (CUDA {torch.version.cuda}), host CPU {cpu_model()}"
    else:
        hardware = f"CPU {cpu_model()}"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Device: {hardware}; {torch.get_num_threads()} torch threads, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}; {date}."
    )


def training_table(training: list[dict]) -> list[str]:
    """model | K | tokens | step ms | x DT | peak MiB | x DT memory | notes."""
    header = ["model", "K", "tokens", "step ms", "x DT", "peak MiB", "x DT memory", "notes"]
    rows = []
    for row in training:
        start = [row["model"], str(row["K"]), str(row["tokens"])]
        if "error" in row:
            rows.append([*start, "-", "-", "-", "-", f"failed: {row['error']}"])
            continue
        numbers = [fmt(row["seconds"] * 1e3, 1), fmt(row["x_dt"]), fmt(row["peak_mib"], 1)]
        rows.append([*start, *numbers, fmt(row["x_dt_memory"]), row["note"]])
    return md_table(header, rows)


def episodes_played(seconds: float) -> str:
    """How many episodes each acting row pooled, in words."""
    if seconds <= 0:
        return "one episode per policy"
    return f"pooled over the episodes played (repeated, up to {MAX_EPISODES}, while the next fitted in {seconds:g} s)"


def acting_table(acting: list[dict], probes: list[int]) -> list[str]:
    """policy | envs | K | ms at each probe | x DT window | growth."""
    first, last = probes[0], probes[-1]
    header = ["policy", "envs", "K", *[f"step {p} ms" for p in probes]]
    header += [f"x DT window (step {first})", f"step {last} / step {first}", "episodes"]
    rows = []
    for row in acting:
        policy = row["policy"] + (f" (failed: {row['error']})" if "error" in row else "")
        latency = [fmt(None if latency_at(row, p) is None else latency_at(row, p) * 1e3) for p in probes]
        rows.append(
            [
                policy,
                str(row["envs"]),
                str(row["K"]),
                *latency,
                fmt(row["x_dt"]),
                fmt(row.get("growth")),
                str(row.get("episodes", 1)),
            ]
        )
    return md_table(header, rows)


def targets_table(targets: list[dict]) -> list[str]:
    """target | measured in this run | status."""
    rows = [[row["target"], row["measured"], row["status"]] for row in targets]
    return md_table(["target", "measured in this run", "status"], rows)


def training_ratio_table(training: list[dict], contexts: list[int]) -> list[str]:
    """Decision Mamba models x K: step time / peak memory as multiples of DT's."""
    models = list(dict.fromkeys(row["model"] for row in training if row["preset"] is not None))
    cells = {(row["model"], row["K"]): row for row in training}
    rows = []
    for model in models:
        found = [cells.get((model, k), {"error": "not run"}) for k in contexts]
        rows.append([model, *[ratio_cell(row) for row in found]])
    return md_table(["x DT (time / memory)", *[f"K={k}" for k in contexts]], rows)


def ratio_cell(row: dict) -> str:
    """'time / memory' ratios of one training row, or why there are none."""
    return "failed" if "error" in row else f"{fmt(row['x_dt'])} / {fmt(row['x_dt_memory'])}"


def acting_ratio_table(acting: list[dict], probes: list[int]) -> list[str]:
    """Decision Mamba policies: latency ratio to DT's window and growth along the episode."""
    first, last = probes[0], probes[-1]
    header = ["policy", "envs", "K", f"x DT window (step {first})", f"step {last} / step {first}"]
    rows = [
        [row["policy"], str(row["envs"]), str(row["K"]), fmt(row["x_dt"]), fmt(row.get("growth"))]
        for row in acting
        if row["preset"] is not None
    ]
    return md_table(header, rows)


def markdown(training: list[dict], acting: list[dict], targets: list[dict], args: argparse.Namespace) -> str:
    """The report: setup, training table, acting table, targets."""
    method = next((row["memory_method"] for row in training if "memory_method" in row), None)
    command = " ".join(["python scripts/benchmark.py", *args.argv])
    plot = os.path.relpath(args.plot, args.markdown.parent)
    lines = [
        f"## Scale: Decision Mamba vs Decision Transformer ({DEVICE_NAMES.get(args.device_type, args.device_type)})",
        "",
        "Written by `scripts/benchmark.py`, which replaces this section on each run.",
        "",
        args.device_description,
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Sizes: hidden {args.hidden}, {args.layers} layers (DT: GPT-2, 1 head); training batch "
        f"{args.batch_size}, 3 tokens per step. Decision Mamba presets: {', '.join(args.presets)}; scan "
        f"backends: {', '.join(args.backends)}. Every ratio compares numbers taken in this same run.",
        "",
        f"![training time, peak memory and acting latency against K and episode step]({plot})",
        "",
        "### Training step",
        "",
        "Forward, backward and AdamW step, each (model, K) in its own process. x DT: step time over DT's at "
        "the same K (below 1 is faster). Peak MiB: "
        f"{PeakMemory.METHODS.get(method, 'not measured')}; x DT memory: over DT's peak.",
        "",
        *training_table(training),
        "",
        "### Acting latency",
        "",
        f"One `policy.act` for all environments, median of the {PROBE_CALLS} calls from each probe step of a "
        f"{args.episode_steps}-step episode, {episodes_played(args.acting_seconds)}. Window policies fill their "
        "K-step window in the first K steps, so their latency plateaus after step K; recurrent policies should "
        "be flat from the start.",
        "",
        *acting_table(acting, args.probes),
        "",
        "### Targets",
        "",
        *targets_table(targets),
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, report: str, device_type: str) -> None:
    """Put `report` in `path` as the section of this device, between markers: a rerun replaces it and
    leaves the rest of the file (BENCHMARKS.md's hand-written sections) as it was; appended when absent."""
    start, end = (
        f"<!-- scripts/benchmark.py {device_type} -->",
        f"<!-- /scripts/benchmark.py {device_type} -->",
    )
    block = f"{start}\n{report}{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def ratio_summary(
    training: list[dict], acting: list[dict], targets: list[dict], args: argparse.Namespace
) -> str:
    """The compact table printed last: training and acting ratios, then the targets."""
    lines = [
        f"Ratios to DT, all from this run ({args.device_type}):",
        "",
        *training_ratio_table(training, args.contexts),
        "",
        *acting_ratio_table(acting, args.probes),
        "",
        *targets_table(targets),
    ]
    return "\n".join(lines)


# -- plot ----------------------------------------------------------------------------------------------------


def line_style(preset: str | None, variant: str | None, presets: list[str]) -> dict:
    """A colour per preset (DT black); dashed for the portable `torch` scan and for window acting."""
    color = "black" if preset is None else f"C{presets.index(preset) % 10}"
    dashed = variant in ("torch", "window")
    return {"color": color, "linestyle": "--" if dashed else "-", "marker": "o", "markersize": 3}


def plot_training(
    axis, training: list[dict], key: str, scale: float, ylabel: str, presets: list[str]
) -> None:
    """One line per model of `key` against K, log-log."""
    for model in dict.fromkeys(row["model"] for row in training):
        rows = [row for row in training if row["model"] == model and row.get(key)]
        if rows:
            style = line_style(rows[0]["preset"], rows[0]["backend"], presets)
            axis.plot([row["K"] for row in rows], [row[key] * scale for row in rows], **style)
    contexts = sorted({row["K"] for row in training})
    axis.set(xscale="log", yscale="log", xlabel="context K (steps; 3K tokens)", ylabel=ylabel)
    axis.set_xticks(contexts, [str(k) for k in contexts])
    axis.set_xticks([], minor=True)


def plot_acting(
    axis, acting: list[dict], num_envs: int, steps: int, probes: list[int], presets: list[str]
) -> None:
    """Latency against episode step for every policy at `num_envs` environments and context `steps`."""
    for row in acting:
        if row["envs"] == num_envs and row["K"] == steps and "latency" in row:
            style = line_style(row["preset"], row["mode"], presets)
            axis.plot(probes, [row["latency"][p] * 1e3 for p in probes], **style)
    title = f"acting, {envs_text(num_envs)}, K={steps}"
    axis.set(yscale="log", xlabel="episode step", ylabel="ms per act", title=title)


def legend_handles(presets: list[str]) -> list:
    """The figure's legend: one colour per model, and what solid and dashed lines mean."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **line_style(None, None, presets), label="DT")]
    handles += [Line2D([], [], **line_style(preset, None, presets), label=preset) for preset in presets]
    handles.append(Line2D([], [], color="gray", label="fused scan / recurrent acting"))
    handles.append(Line2D([], [], color="gray", linestyle="--", label="torch scan / window acting"))
    return handles


def save_plot(training: list[dict], acting: list[dict], args: argparse.Namespace) -> bool:
    """Training time, peak memory and acting latency panels in one PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'hf-decision-mamba[test]').", flush=True)
        return False
    acting_panels = [(envs, k) for envs in args.num_envs for k in args.acting_contexts]
    rows = 1 + (len(acting_panels) + 1) // 2
    height = 4 * rows + 1  # inches, the last for the legend
    figure, axes = plt.subplots(rows, 2, figsize=(12, height), squeeze=False)
    axes = axes.ravel()
    plot_training(axes[0], training, "seconds", 1e3, "training step (ms)", args.presets)
    plot_training(axes[1], training, "peak_mib", 1.0, "peak memory (MiB)", args.presets)
    for axis, (num_envs, steps) in zip(axes[2:], acting_panels, strict=False):
        plot_acting(axis, acting, num_envs, steps, args.probes, args.presets)
    for axis in axes[2 + len(acting_panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"Decision Mamba vs Decision Transformer ({args.device_type}, batch {args.batch_size})")
    figure.legend(handles=legend_handles(args.presets), loc="lower center", ncol=4, fontsize="small")
    figure.tight_layout(rect=(0, 0.7 / height, 1, 1))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=110)
    plt.close(figure)
    return True


# -- command line --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--presets", nargs="+", default=["all"], help="preset names, or 'all' (every distinct MuJoCo one)"
    )
    parser.add_argument(
        "--backends", nargs="+", default=None, help="default: every scan backend usable on the device"
    )
    parser.add_argument(
        "--contexts", nargs="+", type=int, default=[20, 60, 100, 300, 1000], help="training K"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="training batch (16: see the docstring)")
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps after 2 warm-up steps")
    parser.add_argument(
        "--config-seconds", type=float, default=30.0, help="time budget per configuration's repeats"
    )
    parser.add_argument(
        "--max-step-seconds", type=float, default=60.0, help="slower first steps are timed once"
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=1800.0, help="seconds before a worker is killed"
    )
    parser.add_argument("--acting-contexts", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument(
        "--acting-seconds",
        type=float,
        default=30.0,
        help=f"repeat each policy's episode (up to {MAX_EPISODES}) while the next fits in this many seconds",
    )
    parser.add_argument(
        "--probes", nargs="+", type=int, default=[10, 100, 500, 990], help="episode steps timed"
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--max-ep-len", type=int, default=4096)
    parser.add_argument(
        "--markdown",
        type=Path,
        default=ROOT / "BENCHMARKS.md",
        help="file whose section for this device is written",
    )
    parser.add_argument("--plot", type=Path, default=None, help="default: benchmarks/benchmark_<device>.png")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="measured rows as JSON; default: benchmarks/benchmark_<device>.json",
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="measure nothing: report the run saved in this JSON file"
    )
    # Internal: measure the one training configuration this JSON describes, in this fresh process.
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and complete the options: presets, backends, probes, output paths."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.worker is not None:
        return args
    args.device_type = torch.device(args.device).type
    known = mujoco_presets()
    if args.presets == ["all"]:
        args.presets = known
    for name in args.presets:
        if name not in known:
            parser.error(f"--presets: {name!r} is not a MuJoCo preset; expected 'all' or some of {known}")
    if args.backends is None:
        excluded = "fused_cpu" if args.device_type == "cuda" else "cuda"
        args.backends = [name for name in available_backends() if name != excluded]
    args.probes = sorted(set(args.probes))
    if args.probes[-1] + PROBE_CALLS > args.episode_steps:
        parser.error(f"--probes: the last probe needs {PROBE_CALLS} steps before --episode-steps ends")
    return args


def output_paths(args: argparse.Namespace) -> None:
    """Default `--plot` and `--results`: benchmarks/benchmark_<device>.png and .json."""
    stem = ROOT / "benchmarks" / f"benchmark_{args.device_type}"
    args.plot = args.plot or stem.with_suffix(".png")
    args.results = args.results or stem.with_suffix(".json")


RECORDED = ("device_type", "device_description", "argv", "presets", "backends", "contexts", "acting_contexts",
            "num_envs", "probes", "episode_steps", "acting_seconds", "batch_size", "hidden", "layers")  # fmt: skip
"""The settings a saved run keeps, so that `--render` reports it as it was measured."""


def save_results(training: list[dict], acting: list[dict], args: argparse.Namespace) -> None:
    """Write the measured rows and the run's settings as JSON (`--render` reads them back)."""
    record = {
        "settings": {key: getattr(args, key) for key in RECORDED},
        "training": training,
        "acting": acting,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=1) + "\n")


def load_results(path: Path, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """The rows of a saved run; its settings replace those of `args`."""
    record = json.loads(path.read_text())
    record["settings"].setdefault("acting_seconds", 0.0)  # saved before the setting existed: one episode each
    for key, value in record["settings"].items():
        setattr(args, key, value)
    for row in record["acting"]:
        if "latency" in row:
            row["latency"] = {int(probe): seconds for probe, seconds in row["latency"].items()}
    return record["training"], record["acting"]


def report(training: list[dict], acting: list[dict], args: argparse.Namespace) -> None:
    """Write the Markdown section and the plot, then print the ratio table last."""
    targets = target_rows(training, acting, args)
    write_section(args.markdown, markdown(training, acting, targets, args), args.device_type)
    print(f"wrote {args.markdown}", flush=True)
    if save_plot(training, acting, args):
        print(f"wrote {args.plot}", flush=True)
    print("\n" + ratio_summary(training, acting, targets, args), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Measure (or `--render` a saved run), write the Markdown section and the plot, print the ratios last."""
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.render is not None:
        training, acting = load_results(args.render, args)
        output_paths(args)
    else:
        output_paths(args)
        args.device_description = device_line(args)
        print(args.device_description, flush=True)
        training = training_rows(args)
        acting = acting_rows(args)
        save_results(training, acting, args)
        print(f"wrote {args.results}", flush=True)
    report(training, acting, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
