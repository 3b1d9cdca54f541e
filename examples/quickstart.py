"""A short, real GOFT run: the embedded all-MiniLM-L6-v2 encoder, GOFT on every linear layer of the encoder, a few
training steps on a handful of hand-written sentences, then merge and check that merged == unmerged.

This is a smoke-size demonstration that the adapter trains, stays orthogonal and merges exactly on a real pretrained
model; it is not an accuracy benchmark (8 training sentences).  Run: ``.venv/bin/python examples/quickstart.py``.
"""

import copy
import time

import torch
from peft import get_peft_model

import goft
from goft.apps.pretrained import load_sequence_classifier

TRAIN = [
    ("a warm, funny and beautifully acted film", 1),
    ("one of the best stories i have seen this year", 1),
    ("the cast is wonderful and the script is sharp", 1),
    ("a moving, generous and delightful picture", 1),
    ("dull, lifeless and far too long", 0),
    ("the plot is a mess and the jokes fall flat", 0),
    ("a tedious, clumsy waste of a good cast", 0),
    ("painfully boring from start to finish", 0),
]


def main() -> None:
    torch.manual_seed(0)
    model, tokenizer = load_sequence_classifier()
    base_state = copy.deepcopy(model.state_dict())
    config = goft.GOFTConfig(target_modules=["query", "key", "value", "dense"], task_type="SEQ_CLS")
    model = get_peft_model(model, config)
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ".goft_" in n)
    n_all = sum(p.numel() for p in model.parameters())
    print(f"GOFT adapter parameters: {n_adapter:,} of {n_all:,} ({100 * n_adapter / n_all:.3f}%), plus the head")

    texts, labels = [t for t, _ in TRAIN], torch.tensor([y for _, y in TRAIN])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    start = time.perf_counter()
    for step in range(25):
        out = model(**batch, labels=labels)
        loss = out.loss + goft.orthogonality_penalty(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 6 == 0 or step == 24:
            acc = (out.logits.argmax(-1) == labels).float().mean().item()
            print(f"step {step:2d}  loss {loss.item():.4f}  train accuracy {acc:.2f}")
    print(f"trained 25 steps in {time.perf_counter() - start:.1f} s")

    model.eval()
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    r = layer.rotation_matrix("default")
    angles = layer.goft_theta["default"].detach()
    print(
        f"layer 0 query: |angle| max {angles.abs().max():.4f} rad, "
        f"||R^T R - I||_max = {(r.T @ r - torch.eye(r.shape[0])).abs().max():.2e}"
    )
    with torch.no_grad():
        unmerged = model(**batch).logits
        merged_model = model.merge_and_unload(safe_merge=True)
        merged = merged_model(**batch).logits
    print(f"merged vs unmerged logits: max |diff| = {(merged - unmerged).abs().max():.2e}")
    changed = sum(not torch.equal(v, base_state[k]) for k, v in merged_model.state_dict().items() if k in base_state)
    print(f"tensors changed by the merge (adapted weights + trained head): {changed}")
    assert torch.allclose(merged, unmerged, atol=1e-4), "merge changed the model's outputs"
    print("ok")


if __name__ == "__main__":
    main()
