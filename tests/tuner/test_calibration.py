"""goft.calibrate_pairing: the plane scores are the first-order effect of each angle on the loss; the chosen order
pairs the heaviest planes first, is saved, loaded, merged and resumed with the adapter, and leaves the model as it
was (identity, gradients, mode)."""

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from toys import make_mlp, tiny_bert

import goft
from goft import GOFTConfig
from goft import functional as givens
from goft.tuner.calibration import plane_scores

X = torch.randn(16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
Y = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(5))


def loss_fn(outputs, batch):
    return torch.nn.functional.cross_entropy(outputs, batch[1])


def batches(n=3):
    return [(X[4 * k : 4 * k + 4], Y[4 * k : 4 * k + 4]) for k in range(n)]


class Positional(torch.nn.Module):
    """The toy MLP called with (x, y) batches."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, batch):
        return self.mlp(batch[0])


def adapted(pairing="task", **options):
    model = Positional(make_mlp().double())
    return get_peft_model(model, GOFTConfig(target_modules=["mlp.lin0", "mlp.lin1"], pairing=pairing, **options))


def layer(model, name="lin0"):
    return getattr(model.base_model.model.mlp, name)


def test_using_a_task_pairing_before_calibration_says_what_to_do():
    with pytest.raises(goft.PairingNotCalibratedError, match=r"goft\.calibrate_pairing\(model, batches\)"):
        adapted()(batches()[0])


def test_scores_are_the_angle_gradients_of_the_first_level():
    # with the index order, the tree's first level turns (0, 1), (2, 3), ...: the gradient of the summed batch
    # losses with respect to block k's angle, at the identity, must be the score of plane (2k, 2k + 1)
    model = adapted(pairing="index")
    scores, used, rows = plane_scores(model, batches(), "default", loss_fn=loss_fn)
    assert (used, rows) == (3, 12)
    model.eval()
    total = sum(loss_fn(model(batch), batch) for batch in batches())
    for name, d in (("lin0", 12), ("lin1", 7)):
        theta = layer(model, name).goft_theta["default"]
        (grad,) = torch.autograd.grad(total, theta, retain_graph=True)
        score = scores[layer(model, name)]
        level_one = torch.tensor([score[2 * k, 2 * k + 1].item() for k in range(d // 2)], dtype=torch.float64)
        assert torch.allclose(grad[: d // 2], level_one, atol=1e-12, rtol=1e-9)
        assert scores[layer(model, name)].abs().max() > 1e-3  # not vacuous
        assert torch.allclose(scores[layer(model, name)], -scores[layer(model, name)].T)


def test_calibration_pairs_the_heaviest_planes_and_changes_nothing_else():
    model = adapted(scaling=True)
    model.train()
    reference = copy.deepcopy(model.base_model.model.mlp.lin0.base_layer)
    report = goft.calibrate_pairing(model, batches(), loss_fn=loss_fn)
    assert (report.layers, report.batches, report.rows) == (2, 3, 12) and report.seconds > 0
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    scores, _, _ = plane_scores(model, batches(), "default", loss_fn=loss_fn)
    for name, d in (("lin0", 12), ("lin1", 7)):
        order = layer(model, name).goft_order["default"].tolist()
        assert order == givens.order_from_plane_scores(scores[layer(model, name)])
        assert sorted(order) == list(range(d))
        weight = scores[layer(model, name)].abs()
        assert weight[order[0], order[1]] == weight.max()
    # still the identity: the adapted model equals the base exactly
    x = X[:4]
    assert torch.equal(layer(model).base_layer.weight, reference.weight)
    with model.disable_adapter():
        base_out = model((x, None))
    assert torch.equal(model((x, None)), base_out)


def test_a_calibrated_adapter_saves_loads_and_merges_with_its_order(tmp_path):
    model = adapted()
    goft.calibrate_pairing(model, batches(), loss_fn=loss_fn)
    with torch.no_grad():  # a trained adapter, as after fine-tuning
        for name in ("lin0", "lin1"):
            layer(model, name).goft_theta["default"].uniform_(-1, 1)
    want = model(batches()[0])
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(Positional(make_mlp().double()), tmp_path)
    assert loaded.peft_config["default"].pairing == "task"
    assert torch.equal(layer(loaded).goft_order["default"], layer(model).goft_order["default"])
    assert torch.allclose(loaded(batches()[0]), want, atol=1e-12, rtol=0)
    loaded.merge_adapter()
    assert torch.allclose(loaded(batches()[0]), want, atol=1e-12, rtol=0)


def test_calibration_refuses_trained_or_fixed_adapters():
    model = adapted()
    with torch.no_grad():
        layer(model).goft_theta["default"][0] = 0.1
    with pytest.raises(ValueError, match="not the identity"):
        goft.calibrate_pairing(model, batches(), loss_fn=loss_fn)
    with pytest.raises(ValueError, match="pairing='index'"):
        goft.calibrate_pairing(adapted(pairing="index"), batches(), loss_fn=loss_fn)
    with pytest.raises(ValueError, match="outputs.loss is None"):
        goft.calibrate_pairing(adapted(), batches())
    with pytest.raises(ValueError, match="no batches"):
        goft.calibrate_pairing(adapted(), [], loss_fn=loss_fn)


def test_a_damaged_order_in_a_file_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = adapted()
    goft.calibrate_pairing(model, batches(), loss_fn=loss_fn)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("lin0.goft_order"))
    tensors[key] = torch.zeros_like(tensors[key])
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    with pytest.raises(goft.AdapterFileError, match="not a coordinate order"):
        PeftModel.from_pretrained(Positional(make_mlp().double()), tmp_path)


def test_a_transformers_classifier_calibrates_from_labelled_batches():
    model = get_peft_model(tiny_bert(), GOFTConfig(target_modules="all-linear", pairing="task", task_type="SEQ_CLS"))
    g = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 30, (4, 9), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
        for _ in range(3)
    ]
    report = goft.calibrate_pairing(model, data, num_batches=2)
    assert report.batches == 2 and report.layers == 7  # q, k, v, attention output, intermediate, output, pooler
    model(**data[0]).loss.backward()  # trains after calibration


def test_random_pairings_differ_by_layer_and_repeat_by_seed():
    one, two = adapted(pairing="random"), adapted(pairing="random")
    other_seed = adapted(pairing="random", pairing_seed=1)
    lin1 = [layer(m, "lin1").goft_order["default"].tolist() for m in (one, two, other_seed)]
    assert lin1[0] == lin1[1] and lin1[0] != lin1[2]
    small = get_peft_model(
        torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)),
        GOFTConfig(target_modules=["0", "1"], pairing="random"),
    )
    assert (
        small.base_model.model[0].goft_order["default"].tolist()
        != small.base_model.model[1].goft_order["default"].tolist()
    )
