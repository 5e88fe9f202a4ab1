"""torch.compile and torch.export of Decision Mamba on the default CPU path: the fused kernels are opaque custom
operators, the input checks are graph asserts, so both give eager's numbers without graph breaks (issue 15).

The inductor training step runs on every MuJoCo preset and one Atari preset (one layer each, to keep the
compiles short); every preset also runs the same step under `aot_eager` with `fullgraph=True` (the same
AOT-autograd graphs and custom-op fakes, without inductor's code generation)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.export import Dim

from conftest import ALL_PRESETS, ATTENTION, make_batch, tiny_model
from hf_decision_mamba import PRESETS, selective_scan_ops
from hf_decision_mamba.selective_scan import available_backends

FUSED = "fused_cpu" in available_backends()
MUJOCO_PRESETS = [name for name in ALL_PRESETS if PRESETS[name]["config"]["state_encoder"] == "linear"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch (no recompile limits carried over from other presets)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def training_step(model, batch: dict, seed: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one step; the seed fixes the dropout masks (drawn inside the fused op)."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    params = getattr(model, "_orig_mod", model).named_parameters()  # a compiled model shares the parameters
    return loss.detach(), {name: p.grad.clone() for name, p in params if p.grad is not None}


def assert_same_step(preset: str, backend: str, tolerance: float, **overrides) -> None:
    model = tiny_model(preset, dropout=0.1, **overrides).train()
    batch = make_batch(model.config, steps=5)
    batch["labels"] = batch["actions"].clone()
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # fullgraph: a graph break raises
    for call in range(2):  # the first compiled call too (it used to be NaN)
        loss, grads = training_step(compiled, batch, seed=call)
        expected_loss, expected_grads = training_step(model, batch, seed=call)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())
        assert grads.keys() == expected_grads.keys()
        torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected_grads[name], rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_aot_eager_fullgraph_training_step_equals_eager(preset):
    assert_same_step(preset, "aot_eager", tolerance=1e-6)


def test_the_attention_block_compiles_without_graph_break_and_steps_like_eager():
    assert_same_step("dmamba-mujoco", "aot_eager", tolerance=1e-6, **ATTENTION)


@pytest.mark.slow
@pytest.mark.parametrize("preset", [*MUJOCO_PRESETS, "dmamba-atari"])
def test_inductor_training_step_equals_eager(preset):
    assert_same_step(preset, "inductor", tolerance=1e-4, num_hidden_layers=1)


def test_the_model_has_no_graph_break():
    model = tiny_model("mambadm-mujoco", dropout=0.1).train()
    batch = make_batch(model.config, steps=4)
    explanation = torch._dynamo.explain(model)(**batch, labels=batch["actions"])
    assert explanation.graph_break_count == 0, explanation.break_reasons


EXPORT_PRESETS = [
    "dmamba-mujoco",
    "dmamba-atari",
    "dema-mujoco-bl3d",
    "dema-atari",
    "mambadm-mujoco",
    "hf-mamba-dt",
]
EXPORT_MODELS = [*((preset, {}) for preset in EXPORT_PRESETS), ("dmamba-mujoco", ATTENTION)]


@pytest.mark.parametrize(
    ("preset", "overrides"),
    EXPORT_MODELS,
    ids=lambda value: value.get("block_type", "") if isinstance(value, dict) else value,
)
def test_export_with_static_and_dynamic_sizes_equals_eager(preset, overrides):
    model = tiny_model(preset, **overrides)
    batch = make_batch(model.config, batch=3, steps=5)
    with torch.no_grad():
        static = torch.export.export(model, args=(), kwargs=batch)
        torch.testing.assert_close(
            static.module()(**batch).action_preds, model(**batch).action_preds, rtol=1e-5, atol=1e-5
        )
        size = {0: Dim("batch", min=1, max=64), 1: Dim("steps", min=3, max=model.config.max_ep_len)}
        dynamic = torch.export.export(model, args=(), kwargs=batch, dynamic_shapes={k: size for k in batch})
        for rows, steps in ((1, 7), (4, 3), (2, 12)):
            other = make_batch(model.config, batch=rows, steps=steps, seed=rows)
            got = dynamic.module()(**other).action_preds
            torch.testing.assert_close(got, model(**other).action_preds, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not FUSED, reason="no C compiler and no numba: the model runs the torch scan")
def test_exported_graph_calls_the_fused_kernels_as_opaque_ops():
    model = tiny_model("dmamba-mujoco")
    batch = make_batch(model.config)
    with torch.no_grad():
        program = torch.export.export(model, args=(), kwargs=batch)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {
        f"{selective_scan_ops.NAMESPACE}.scan_fwd.default",
        f"{selective_scan_ops.NAMESPACE}.conv_fwd.default",
    } <= targets


@pytest.mark.parametrize("traced", ["compile", "export"])
def test_traced_models_still_refuse_bad_values(traced):
    """Value checks are graph asserts: NaN states or out-of-range timesteps stop a compiled or exported model
    with the field's name (a RuntimeError from the assert, where eager raises ValueError)."""
    model = tiny_model("dmamba-mujoco")
    batch = make_batch(model.config, steps=4)
    if traced == "compile":
        run = torch.compile(model, backend="aot_eager", fullgraph=True)
    else:
        run = torch.export.export(model, args=(), kwargs=batch).module()
    with torch.no_grad():
        run(**batch)
        nan_states = batch["states"].clone()
        nan_states[1, 2, 0] = float("nan")
        with pytest.raises(RuntimeError, match="states: contains NaN or inf values"):
            run(**{**batch, "states": nan_states})
        with pytest.raises(RuntimeError, match=r"timesteps: got values outside \[0, max_ep_len=64\)"):
            run(**{**batch, "timesteps": batch["timesteps"] + 100})


def test_a_checkpoints_remote_code_registers_its_own_ops_next_to_the_package(tmp_path):
    """Hub remote code imported in a process that also has the package: its ops get their own namespace."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model = tiny_model("dmamba-mujoco")
    model.save_pretrained(tmp_path)
    remote_class = get_class_from_dynamic_module("modeling_decision_mamba.DecisionMambaModel", str(tmp_path))
    remote = remote_class.from_pretrained(tmp_path).eval()
    remote_ops = sys.modules[remote_class.__module__.rsplit(".", 1)[0] + ".selective_scan_ops"]
    assert remote_ops.NAMESPACE != selective_scan_ops.NAMESPACE
    batch = make_batch(model.config)
    with torch.no_grad():
        torch.testing.assert_close(remote(**batch).action_preds, model(**batch).action_preds, rtol=0, atol=0)
