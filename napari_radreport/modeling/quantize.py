"""Weight-only 8-bit and 4-bit Linear layers, so that a 7-8 B model fits a workstation.

``quantize_model(model, "int8" | "int4", device)`` replaces the model's ``nn.Linear`` layers in place, one
at a time (the float weight of a layer is freed as soon as its integer copy exists, so the peak is the
model as loaded plus one layer):

* **int8**: one symmetric scale per output row (``w ~ q * scale``, q in [-127, 127]).
* **int4**: an asymmetric scale and zero per ``INT4_GROUP`` input values of a row
  (``w ~ (q - 8) * scale + zero``, q in [0, 15]).

Scales and zeros are bfloat16 (the levels are chosen against the rounded scales). On the CPU the products
run in PyTorch's own weight-only kernels (``torch._weight_int8pack_mm``,
``torch._weight_int4pack_mm_for_cpu``), which read the integer weights without a float copy. They are fast
in bfloat16 only (12x and 30x faster than with float32 inputs on a 4096 x 11008 layer, one thread), so a
layer's input is rounded to bfloat16 for the product and its output comes back in the model's dtype. On
another device a layer makes its float weight for the one product (the weights stay small in memory; the
speed is not measured here). The 4-bit CPU kernel wants its own packing, so a model is quantized for the
device it will run on (``Int4Linear.layout``).

Left in floating point: the input embeddings (and an output layer tied to them), LoRA's own small
matrices (their base layer is quantized, so adapters load first), layers whose sizes the kernels cannot
take (``kernel_takes``: 8-bit, inputs not a multiple of 16; 4-bit, inputs not a multiple of 64 or outputs
of 16), and every non-Linear tensor (norms, convolutions). ``quantized_bytes`` is the one count of a
layer's bytes, which ``engine/memory_plan.py`` uses to estimate a quantized model without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

QUANTIZATIONS = ("none", "int8", "int4")
LABELS = {"none": "full-precision weights", "int8": "8-bit weights", "int4": "4-bit weights"}
INT4_GROUP = 64  # input values of a row that share one 4-bit scale and zero
INT4_ROWS = 16  # the CPU 4-bit packing takes output rows in multiples of this
# the CPU 8-bit kernel takes inputs in multiples of this (others give wrong products or crash, measured on
# torch 2.13's bfloat16 path)
INT8_COLUMNS = 16
INT8_MAX = 127
INT4_LEVELS = 15
MIN_SCALE = 1e-10  # a row or group of zeros keeps a finite scale
SCALE_ITEMSIZE = 2  # scales and zeros are bfloat16
# Input rows (tokens) above which an 8-bit CPU layer makes its bfloat16 weight and runs the dense product.
# The weight-only kernel's time grows with the rows; making the weight costs a fixed 30 ms (4096 x 4096, one
# thread; measured: kernel 42 ms for 64 rows and 130 ms for 256, dense with the weight made 40 and 55 ms), so
# a long prompt is computed dense and each decoded token in the kernel. The 4-bit kernel always runs: making
# its weight costs more than the kernel at every prompt length measured (up to 256 rows).
KERNEL_MAX_ROWS = 64


class QuantizationError(ValueError):
    """A quantization this model or device cannot take; the message says which and why."""


def check_quantization(name: str) -> str:
    """``name`` if it is one of QUANTIZATIONS, else a QuantizationError listing them."""
    if name not in QUANTIZATIONS:
        raise QuantizationError(f"unknown quantization {name!r}; use one of {', '.join(QUANTIZATIONS)}")
    return name


def kernel_takes(kind: str, rows: int, columns: int) -> bool:
    """Whether a ``rows`` x ``columns`` Linear weight can be stored as ``kind`` (else it stays float)."""
    if kind == "int8":
        return columns % INT8_COLUMNS == 0
    return kind == "int4" and columns % INT4_GROUP == 0 and rows % INT4_ROWS == 0


def int4_groups(rows: int, columns: int) -> int:
    """The 4-bit scale-and-zero groups of a ``rows`` x ``columns`` weight."""
    return rows * -(-columns // INT4_GROUP)


def quantized_bytes(kind: str, elements: int, rows: int, groups: int, float_itemsize: int) -> int:
    """Bytes of Linear weights of ``elements`` values in ``rows`` output rows (``groups``: their
    ``int4_groups``) stored as ``kind``; "none": the float weights themselves, ``float_itemsize`` bytes
    each. Sums of layers give the sum of their bytes."""
    if kind == "int8":
        return elements + rows * SCALE_ITEMSIZE
    if kind == "int4":
        return elements // 2 + groups * 2 * SCALE_ITEMSIZE
    return elements * float_itemsize


def _bfloat16_at_least(values: torch.Tensor) -> torch.Tensor:
    """``values`` (positive float32) rounded to bfloat16 no smaller than they are, so that the largest
    weight of a row or group stays within the levels."""
    import torch

    rounded = values.to(torch.bfloat16)
    return torch.where(rounded.float() < values, torch.nextafter(rounded, torch.full_like(rounded, 1e38)),
                       rounded)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows, bfloat16 scale per row) with ``weight ~ q * scale[:, None]``."""
    import torch

    w = weight.detach().float()
    scale = _bfloat16_at_least((w.abs().amax(dim=1) / INT8_MAX).clamp(min=MIN_SCALE))
    q = torch.round(w / scale.float()[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels 0..15 as int32 of the weight's shape, (columns / group, rows, 2) bfloat16 scales and zeros)
    with ``weight ~ (q - 8) * scale + zero`` per group of ``group`` columns."""
    import torch

    rows, columns = weight.shape
    w = weight.detach().float().reshape(rows, columns // group, group)
    low, high = w.amin(dim=2, keepdim=True), w.amax(dim=2, keepdim=True)
    scale = _bfloat16_at_least(((high - low) / INT4_LEVELS).clamp(min=MIN_SCALE))
    zero = (low + 8 * scale.float()).to(torch.bfloat16)
    levels = torch.round((w - zero.float()) / scale.float() + 8).clamp(0, INT4_LEVELS)
    q = levels.to(torch.int32).reshape(rows, columns)
    scales_and_zeros = torch.cat([scale, zero], dim=2).transpose(0, 1).contiguous()
    return q, scales_and_zeros


class _QuantizedLinear:
    """What both layer kinds share: the float Linear's sizes and bias, flattening the input, and scales that
    stay bfloat16 when the model moves to another dtype (the kernels take them so)."""

    in_features: int
    out_features: int
    bias: Any
    bfloat16_buffers: tuple[str, ...] = ()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.in_features).contiguous()

    def _finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse: bool = True):  # model.to(dtype) leaves the scales in bfloat16
        import torch

        super()._apply(fn, recurse)  # type: ignore[misc]  # nn.Module's, next in the layers' MRO
        for name in self.bfloat16_buffers:
            setattr(self, name, getattr(self, name).to(torch.bfloat16))
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


def _layer_classes():
    """The two layer classes, built on first use so that importing this module imports no torch."""
    import torch
    from torch import nn

    class Int8Linear(_QuantizedLinear, nn.Module):
        """A Linear layer with int8 weights and one scale per output row."""

        bfloat16_buffers = ("scales",)

        def __init__(self, linear: nn.Linear) -> None:
            nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            q, scale = quantize_int8(linear.weight)
            self.register_buffer("qweight", q.to(linear.weight.device))
            self.register_buffer("scales", scale.to(linear.weight.device))
            self.bias = linear.bias

        def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
            """The float weight this layer stands for (the product's reference)."""
            return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = self._flat(x)
            if flat.device.type != "cpu":
                y = flat @ self.dequantized(flat.dtype).T
            elif flat.shape[0] > KERNEL_MAX_ROWS:
                y = (flat.to(torch.bfloat16) @ self.dequantized(torch.bfloat16).T).to(flat.dtype)
            else:
                y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.qweight,
                                              self.scales).to(flat.dtype)
            return self._finish(y, x)

    class Int4Linear(_QuantizedLinear, nn.Module):
        """A Linear layer with 4-bit weights and a scale and zero per group of INT4_GROUP input values;
        ``layout`` "cpu" holds PyTorch's CPU kernel packing, "nibbles" two levels per byte (low nibble the
        even column) for any other device."""

        bfloat16_buffers = ("scales_and_zeros",)

        def __init__(self, linear: nn.Linear, layout: str) -> None:
            nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.layout = layout
            q, scales_and_zeros = quantize_int4(linear.weight)
            if layout == "cpu":
                packed = torch._convert_weight_to_int4pack_for_cpu(q.cpu(), 1)
            else:
                packed = (q[:, 1::2] << 4 | q[:, ::2]).to(torch.uint8)
            device = linear.weight.device
            self.register_buffer("qweight", packed.to(device))
            self.register_buffer("scales_and_zeros", scales_and_zeros.to(device))
            self.bias = linear.bias

        def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
            """The float weight this layer stands for ("nibbles" layout only)."""
            if self.layout == "cpu":
                raise QuantizationError("a 4-bit layer packed for the CPU kernel keeps no unpacked levels")
            levels = torch.stack([self.qweight & 15, self.qweight >> 4], dim=2).reshape(self.out_features, -1)
            scale, zero = self.scales_and_zeros.to(dtype).transpose(0, 1).unbind(dim=2)  # (rows, groups)
            grouped = (levels.to(dtype) - 8).reshape(self.out_features, -1, INT4_GROUP)
            return (grouped * scale[:, :, None] + zero[:, :, None]).reshape(self.out_features, -1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = self._flat(x)
            if self.layout == "cpu":
                if flat.device.type != "cpu":
                    raise QuantizationError("this 4-bit model was quantized for the CPU; load it again for "
                                            f"{flat.device.type}")
                y = torch._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.qweight, INT4_GROUP,
                                                      self.scales_and_zeros).to(flat.dtype)
            else:
                y = flat @ self.dequantized(flat.dtype).T
            return self._finish(y, x)

    return Int8Linear, Int4Linear


@dataclass
class QuantizationSummary:
    """What ``quantize_model`` did: the layers replaced and kept, and the bytes before and after."""

    kind: str
    layers: int = 0
    kept: int = 0
    float_bytes: int = 0
    quantized_bytes: int = 0

    def line(self) -> str:
        """'312 Linear layers to 8-bit weights (13.0 GB -> 6.9 GB), 1 kept in floating point'."""
        from napari_radreport.modeling.catalog import human_bytes

        kept = f", {self.kept} kept in floating point" if self.kept else ""
        return (f"{self.layers} Linear layers to {LABELS[self.kind]} ({human_bytes(self.float_bytes)} -> "
                f"{human_bytes(self.quantized_bytes)}){kept}")


def quantized_layer(linear: Any, kind: str, layout: str = "cpu") -> nn.Module:
    """The ``kind`` ("int8" / "int4") layer of a Linear layer (anything with ``weight``, ``bias``,
    ``in_features`` and ``out_features``); ``layout`` of 4 bits: "cpu" or "nibbles"."""
    int8_linear, int4_linear = _layer_classes()
    return int8_linear(linear) if kind == "int8" else int4_linear(linear, layout)


def tied_output(model: nn.Module) -> nn.Module | None:
    """The output layer when it shares its weight with the input embeddings (it stays float), else None."""
    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    outputs = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if outputs is not None and inputs is not None and outputs.weight is inputs.weight:
        return outputs
    return None


def _kept_in_float(model: nn.Module) -> set[int]:
    """ids of the Linear layers that stay in floating point: an output layer tied to the input embeddings,
    and LoRA's own matrices (peft's ``lora_A``/``lora_B``...), whose base layer is quantized instead."""
    tied = tied_output(model)
    keep: set[int] = set() if tied is None else {id(tied)}
    for name, module in model.named_modules():
        if ".lora_" in f".{name}":
            keep.update(id(m) for m in module.modules())
    return keep


def quantize_model(model: nn.Module, kind: str, device: str = "cpu") -> QuantizationSummary:
    """Replace ``model``'s Linear layers by ``kind`` ("int8" or "int4") layers in place, for running on
    ``device`` (the 4-bit packing depends on it); "none" changes nothing. ``model.to(dtype)`` afterwards
    keeps the scales in bfloat16."""
    from torch import nn

    check_quantization(kind)
    if kind == "none":
        return QuantizationSummary(kind)
    keep = _kept_in_float(model)
    layout = "cpu" if device == "cpu" else "nibbles"
    itemsize = 4
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:  # exactly a Linear: subclasses (peft's layers) hold their own
                continue
            fits = kernel_takes(kind, child.out_features, child.in_features)
            if id(child) not in keep and fits and child.weight.device.type != "meta":
                itemsize = child.weight.element_size()
                setattr(parent, name, quantized_layer(child, kind, layout))
    return quantization_summary(model, kind, itemsize)


def quantization_summary(model: nn.Module, kind: str, float_itemsize: int) -> QuantizationSummary:
    """The quantized layers of ``model``, the plain Linear layers left, and the bytes of the quantized ones
    stored at ``float_itemsize`` bytes a value and as they are."""
    from torch import nn

    summary = QuantizationSummary(kind)
    for module in model.modules():
        if type(module) is nn.Linear:
            summary.kept += 1
        elif isinstance(module, _QuantizedLinear):
            rows, columns = module.out_features, module.in_features
            summary.layers += 1
            summary.float_bytes += rows * columns * float_itemsize
            summary.quantized_bytes += quantized_bytes(kind, rows * columns, rows, int4_groups(rows, columns),
                                                       float_itemsize)
    return summary
