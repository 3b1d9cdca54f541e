"""--device (goft.apps.devices): a device this machine lacks is refused by name."""

import pytest
import torch

from goft.apps.devices import training_device
from goft.apps.errors import OptionError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_is_refused_by_name_where_there_is_none():
    for name in ("cuda", "cuda:0"):
        with pytest.raises(
            OptionError, match=f"^device is {name!r}, but this PyTorch .* sees no CUDA device; use --device cpu"
        ):
            training_device(name)
