"""Quantize while the weights load, so that the peak is the quantized model plus one tensor, not the model at
full precision: a 7-8 B model in 8 bits loads in the memory 8 bits take.

``on_load_config("int8" | "int4", device)`` is a ``quantization_config`` for ``from_pretrained``. It plugs
``modeling/quantize.py``'s layers into transformers' own on-the-fly quantization (a registered quantizer,
the way bitsandbytes and quanto plug in): before the weights load, each Linear layer the kernels take
becomes a ``PendingLinear`` on the meta device; transformers then loads the checkpoint one tensor at a time
(it loads sequentially when a quantizer quantizes on the fly) and hands each such layer's weight to
``QuantizeOnLoad``, which replaces the layer by its 8-bit or 4-bit form at once. What ``quantize_model``
keeps in floating point stays so here too (an output layer tied to the embeddings, sizes the kernels cannot
take). A layer whose weight the checkpoint lacks (``allow_partial``) is quantized after loading from the
values transformers initialised it with.

transformers reads safetensors through a memory map, and every page read stays resident (and counted in
the process's memory) while the file is mapped: quantizing a 13 GB bfloat16 checkpoint to 7 GB would hold
20 GB. Once a weight is quantized, ``release_file_pages`` hands its pages of the mapped file back to the
kernel (``madvise(MADV_DONTNEED)``; Linux only, and only for a range inside a mapping of a ``.safetensors``
file, which is read-only, so a later read simply reads the file again).

LoRA adapters wrap plain Linear layers, so a model with adapters loads at full precision and is quantized
after its adapters (``quantize_model``); the engine chooses.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

METHOD = "radreport"  # the quantization_config's quant_method
MADV_DONTNEED = 4  # linux/mman.h


def on_load_config(kind: str, device: str = "cpu") -> Any:
    """The ``quantization_config`` that loads a model with ``kind`` ("int8" / "int4") layers for
    ``device``."""
    from napari_radreport.modeling.quantize import check_quantization

    config_class, _quantizer = _registered()
    return config_class(kind=check_quantization(kind), layout="cpu" if device == "cpu" else "nibbles")


@cache
def _registered() -> tuple[type, type]:
    """The config and quantizer classes, built and registered with transformers once."""
    import torch
    from torch import nn
    from transformers.core_model_loading import ConversionOps
    from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin

    from napari_radreport.modeling.quantize import kernel_takes, quantized_layer, tied_output

    class RadReportQuantization(QuantizationConfigMixin):
        """Weight-only layers of ``modeling/quantize.py``: ``kind`` int8 / int4, ``layout`` cpu / nibbles."""

        def __init__(self, kind: str = "int8", layout: str = "cpu", **kwargs: Any) -> None:
            self.quant_method = METHOD
            self.kind, self.layout = kind, layout

    class PendingLinear(nn.Module):
        """A Linear layer waiting for its weight, which ``QuantizeOnLoad`` turns into a quantized layer."""

        def __init__(self, linear: nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight = linear.weight
            self.bias = linear.bias

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # only if left unquantized by a failed load
            return nn.functional.linear(x, self.weight, self.bias)

    def replace(parent: nn.Module, name: str, pending: PendingLinear, config: RadReportQuantization) -> None:
        parent._modules[name] = quantized_layer(pending, config.kind, config.layout)

    class QuantizeOnLoad(ConversionOps):
        """Makes the quantized layer from a PendingLinear's weight as soon as it is read."""

        def __init__(self, config: RadReportQuantization) -> None:
            self.config = config

        def convert(self, input_dict: dict[str, Any], model=None, full_layer_name: str | None = None,
                    missing_keys=None, **kwargs: Any) -> dict[str, Any]:
            value = next(iter(input_dict.values()))
            value = value[0] if isinstance(value, list) else value
            module_name = full_layer_name.rsplit(".", 1)[0]
            parent_name, _, name = module_name.rpartition(".")
            parent = model.get_submodule(parent_name)
            pending = parent._modules[name]
            pending.weight = nn.Parameter(value, requires_grad=False)
            replace(parent, name, pending, self.config)
            release_file_pages(value)
            if missing_keys is not None:
                missing_keys.discard(full_layer_name)
            return {}

    class RadReportQuantizer(HfQuantizer):
        """Replaces the Linear layers before loading and quantizes each weight as it loads."""

        requires_calibration = False

        def _process_model_before_weight_loading(self, model, **kwargs: Any):
            kept = tied_output(model)
            for parent in list(model.modules()):
                for name, child in list(parent.named_children()):
                    if (type(child) is nn.Linear and child is not kept
                            and kernel_takes(self.quantization_config.kind, child.out_features,
                                             child.in_features)):
                        parent._modules[name] = PendingLinear(child)
            return model

        def param_needs_quantization(self, model, param_name: str, **kwargs: Any) -> bool:
            module_name, _, tensor = param_name.rpartition(".")
            return tensor == "weight" and isinstance(model.get_submodule(module_name), PendingLinear)

        def get_quantize_ops(self):
            return QuantizeOnLoad(self.quantization_config)

        def _process_model_after_weight_loading(self, model, **kwargs: Any):
            for parent in list(model.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, PendingLinear) and child.weight.device.type != "meta":
                        replace(parent, name, child, self.quantization_config)
            return model

        def is_serializable(self) -> bool:
            return False

        @property
        def is_trainable(self) -> bool:
            return False

    register_quantization_config(METHOD)(RadReportQuantization)
    register_quantizer(METHOD)(RadReportQuantizer)
    return RadReportQuantization, RadReportQuantizer



def _mapped_file(address: int) -> tuple[str, int, int] | None:
    """(path, start, end) of this process's mapping holding ``address`` (/proc/self/maps), or None."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return (fields[5].strip() if len(fields) > 5 else ""), start, end
    return None


def release_file_pages(tensor: Any) -> bool:
    """Drop the resident pages of ``tensor``'s bytes when they are part of a mapped .safetensors file (the
    whole pages inside its range); True when released. Anything else (memory of the process's own, another
    system than Linux) is left alone."""
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return False
    import ctypes
    import mmap

    begin, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    mapping = _mapped_file(begin)
    if mapping is None or not mapping[0].endswith(".safetensors") or begin + size > mapping[2]:
        return False
    page = mmap.PAGESIZE
    first, last = -(-begin // page) * page, (begin + size) // page * page
    if last <= first:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(first, last - first, MADV_DONTNEED) == 0
