"""GOFT under torch.compile: no graph breaks, and compiled training, saving, loading and merging agree with eager.

Modelled on PEFT's own compile tests (train a few steps, save, load, merge).  ``aot_eager`` traces exactly what
inductor traces (Dynamo's graph and AOTAutograd's joint forward/backward) without generating C++, so the multi-step
checks stay quick; one check runs the default inductor backend end to end.
"""

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from toys import make_mlp, tiny_bert

from goft import GOFTConfig

VARIANTS = {
    "goft": {},
    "qgoft": {"quasi": True},
    "goft*": {"scaling": True},
    "qgoft*": {"quasi": True, "scaling": True},
    "qgoft butterfly depth 2": {"quasi": True, "structure": "butterfly", "depth": 2},
    "goft* random pairing": {"scaling": True, "pairing": "random"},
}
X = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # each test compiles new modules of the same classes: without a reset, Dynamo's per-code-object recompile limit
    # (8) is reached across tests, and fullgraph=True turns that into a failure that says nothing about GOFT
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def adapted_mlp(**options):
    return get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **options))


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_traces_as_one_graph(variant):
    explanation = torch._dynamo.explain(adapted_mlp(**VARIANTS[variant]))(X)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def _train(model, steps=3, lr=0.05):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        ids = torch.randint(0, 30, (4, 9), generator=torch.Generator().manual_seed(step))
        loss = model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("variant", ["goft", "qgoft*"])  # strict angles; free blocks with a scale
def test_compiled_training_save_load_and_merge_match_eager(variant, tmp_path):
    config = GOFTConfig(target_modules=["query", "value", "dense"], task_type="SEQ_CLS", **VARIANTS[variant])
    eager = get_peft_model(tiny_bert(), config)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)  # fullgraph: a break would raise
    initial = {name: p.detach().clone() for name, p in eager.named_parameters() if "goft" in name}
    eager_losses = _train(eager)
    assert _train(compiled) == pytest.approx(eager_losses, abs=1e-6)
    for (name, p_eager), (_, p_compiled) in zip(
        eager.named_parameters(), compiled_model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p_compiled, p_eager, atol=1e-6, rtol=1e-6, msg=name)
    assert all(not torch.equal(p, initial[name]) for name, p in eager.named_parameters() if name in initial)

    ids = torch.randint(0, 30, (3, 7), generator=torch.Generator().manual_seed(9))
    eager.eval()
    want = eager(input_ids=ids).logits
    compiled.save_pretrained(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path / "adapter")
    loaded.eval()
    torch.testing.assert_close(
        torch.compile(loaded, backend="aot_eager", fullgraph=True)(input_ids=ids).logits, want, atol=1e-6, rtol=1e-6
    )
    merged = loaded.merge_and_unload()
    torch.testing.assert_close(
        torch.compile(merged, backend="aot_eager", fullgraph=True)(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5
    )


def test_inductor_forward_and_backward_match_eager():
    eager = adapted_mlp(quasi=True, scaling=True)
    compiled_model = copy.deepcopy(eager)
    x_eager, x_compiled = X.clone().requires_grad_(), X.clone().requires_grad_()
    out_eager = eager(x_eager)
    out_compiled = torch.compile(compiled_model, fullgraph=True)(x_compiled)
    torch.testing.assert_close(out_compiled, out_eager, atol=1e-6, rtol=1e-6)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    torch.testing.assert_close(x_compiled.grad, x_eager.grad, atol=1e-6, rtol=1e-6)
    for (name, p_eager), (_, p_compiled) in zip(
        eager.named_parameters(), compiled_model.named_parameters(), strict=True
    ):
        if p_eager.requires_grad:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, atol=1e-6, rtol=1e-6, msg=name)


def test_compiling_warns_about_nothing_of_goft():
    """Dynamo warns once per process about every lru_cache-wrapped function it traces; goft's level tables use a
    cache it traces through (run in a fresh process, where the warning would show)."""
    import subprocess
    import sys

    code = (
        "import torch, peft, goft\n"
        "base = torch.nn.Sequential(torch.nn.Linear(16, 8))\n"
        "model = peft.get_peft_model(base, goft.GOFTConfig(target_modules=['0']))\n"
        "torch.compile(model)(torch.randn(4, 16, requires_grad=True)).sum().backward()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lru_cache" not in result.stderr and "goft/ops" not in result.stderr, result.stderr[-2000:]
