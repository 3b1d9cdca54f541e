"""The third-party log lines the goft command drops (goft.apps.log_filters), and only those."""


def test_only_the_foreign_kernel_noise_is_dropped(caplog):
    import logging

    from goft.apps import log_filters

    log_filters.drop_foreign_kernel_noise()
    log_filters.drop_foreign_kernel_noise()  # idempotent: one filter per logger
    assert sum(type(f).__name__ == "_DropMessages" for f in logging.getLogger("torchao").filters) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: no")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an"
        )
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure"
        )
        logging.getLogger("torchao").warning("Failed to quantize layer q_proj")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to dequantize")
        logging.getLogger("torch.utils._pytree").warning("something else about pytree")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to quantize layer q_proj",
        "Failed to dequantize",
        "something else about pytree",
    ]


def test_peft_s_gradient_checkpointing_deprecation_is_dropped_and_other_warnings_kept():
    import warnings

    from goft.apps import log_filters

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_filters.drop_foreign_kernel_noise()
        warnings.warn("`is_gradient_checkpointing` is deprecated, removed in v6", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
