"""Everything the applications write: atomic, with the permissions a plain open() gives, never half-written."""

import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from goft.apps import files


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gives_the_mode_plain_open_gives(tmp_path, umask):
    with open(tmp_path / "plain", "w"):
        pass
    want = mode(tmp_path / "plain")
    assert want == 0o666 & ~umask
    written = [
        files.write_bytes(tmp_path / "a.bin", b"x"),
        files.write_text(tmp_path / "a.md", "x"),
        files.write_json(tmp_path / "a.json", {"x": 1}),
        files.write_torch(tmp_path / "a.pt", {"x": torch.ones(2)}),
        files.write_tensors(tmp_path / "a.safetensors", {"x": torch.ones(2)}),
    ]
    assert {p.name: mode(p) for p in written} == {p.name: want for p in written}
    assert torch.equal(load_file(tmp_path / "a.safetensors")["x"], torch.ones(2))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = files.write_text(tmp_path / "results.json", "old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_staged_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with files.staged_directory(target) as staged:
            (staged / "new.txt").write_text("new")
            raise RuntimeError("conversion failed")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with files.staged_directory(target) as staged:
        (staged / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_cache_dir_and_offline_respect_the_user(monkeypatch, tmp_path):
    monkeypatch.setenv("GOFT_CACHE", str(tmp_path))
    assert files.cache_dir() == tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    files.offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_saving_an_adapter_of_an_embedded_base_is_quiet_and_keeps_its_name(tiny_llama, tmp_path):
    """PEFT looks for the base's config to see whether the vocabulary was resized; "goft:smollm2" names no directory,
    and the warning it gives would come with every save.  Other warnings still show."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = get_peft_model(LlamaForCausalLM.from_pretrained(tiny_llama), LoraConfig(target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = "goft:smollm2"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files.save_pretrained(model, tmp_path / "adapter")
        warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of the user's own"]
    assert '"base_model_name_or_path": "goft:smollm2"' in (tmp_path / "adapter" / "adapter_config.json").read_text()
