"""Device and dtype choices, memory checks and freeing: the one place that decides where a model runs.

``auto`` picks CUDA, then Apple MPS, then the CPU; the dtype is bf16 on CUDA (fp16 where bf16 is not
supported), fp32 elsewhere. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import gc
from pathlib import Path

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class DeviceError(ValueError):
    """A device or dtype that this machine cannot give; the message says which and why."""


def resolve_device(choice: str = "auto") -> str:
    """'cuda', 'cuda:N', 'mps' or 'cpu' for a user's choice; an unavailable device is a DeviceError."""
    import torch

    choice = (choice or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {choice!r} asked for, but this machine has no usable CUDA GPU")
        index = int(choice.split(":")[1]) if ":" in choice else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {choice!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return choice
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("device 'mps' asked for, but Apple MPS is not available here")
        return "mps"
    if choice == "cpu":
        return "cpu"
    raise DeviceError(f"unknown device {choice!r}; use one of {', '.join(DEVICES)} or cuda:N")


def resolve_dtype(device: str, choice: str = "auto"):
    """The torch dtype to run on ``device``: bf16 on CUDA (fp16 without bf16 support), fp32 otherwise."""
    import torch

    choice = (choice or "auto").lower()
    if choice == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if choice not in DTYPES:
        raise DeviceError(f"unknown dtype {choice!r}; use one of {', '.join(DTYPES)}")
    dtype = getattr(torch, choice)
    if device == "cpu" and dtype == torch.float16:
        raise DeviceError("float16 on the CPU is very slow and poorly supported; use float32 or bfloat16")
    return dtype


def loading_dtype(folder: Path, dtype, quantization: str = "none"):
    """The dtype to load weights in: ``dtype``, except that a float32 run with quantized weights loads
    16-bit weights as they are stored (bfloat16 or float16, no rounding), which halves the peak of loading
    before the Linear layers shrink (``modeling/quantize.py``)."""
    import torch

    if quantization == "none" or dtype != torch.float32:
        return dtype
    from napari_radreport.modeling.catalog import stored_float_dtype

    stored = {"BF16": torch.bfloat16, "F16": torch.float16}.get(stored_float_dtype(folder) or "")
    return stored or dtype


def free_bytes(device: str) -> int | None:
    """Memory free for a new model on ``device`` (CUDA: the driver's count; CPU: MemAvailable); None if
    unknown."""
    import torch

    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device == "cpu":
        from napari_radreport.io.limits import meminfo_available

        return meminfo_available()
    return None


def weights_bytes(folder: Path, dtype) -> int:
    """Bytes the weights in ``folder`` will take once loaded in ``dtype`` (from the safetensors headers, as
    ``modeling/catalog.py`` counts them; a cut or garbled file is a CheckpointError naming it, never a
    MemoryError from a garbage header length)."""
    import torch

    from napari_radreport.modeling.catalog import weight_summary

    itemsize = torch.tensor([], dtype=dtype).element_size()
    return weight_summary(sorted(Path(folder).glob("*.safetensors")))[1] * itemsize


def memory_warning(folder: Path, device: str, dtype, margin: float | None = None) -> str | None:
    """A one-line warning when a report with the model will probably not fit in free memory: the estimate of
    ``engine/memory_plan.py`` (weights, key/value cache, activations, overhead) x ``margin`` against
    ``free_bytes``, naming the cheaper precisions up to the first that fits."""
    from napari_radreport.engine import memory_plan

    free = free_bytes(device)
    if free is None:
        return None
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    margin = memory_plan.MARGIN if margin is None else margin
    kind = "cpu" if device == "cpu" else "cuda"
    try:
        _estimate, line = memory_plan.plan(folder, name, free, kind, margin=margin)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):  # a config missing a size: the weights alone
        import torch

        need = weights_bytes(folder, getattr(torch, name, torch.float32)) * margin
        line = (None if need <= free else
                f"needs about {memory_plan.size_text(need)} for its weights alone, "
                f"{memory_plan.size_text(free)} free")
    if line is None:
        return None
    return (f"{Path(folder).name} on {device} {line}; loading may fail (close other programs, or choose "
            "another precision, a smaller model or another device)")


def release_memory() -> None:
    """Run the garbage collector and hand cached GPU memory back to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    backend = getattr(torch.backends, "mps", None)
    if mps is not None and backend is not None and backend.is_available():
        mps.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and the CPU's MemoryError."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower()


def training_precision(choice: str = "auto") -> str:
    """accelerate's ``mixed_precision`` for training: bf16 on CUDA (fp16 without bf16
    support), none elsewhere."""
    import torch

    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def training_on_cpu() -> bool:
    """Whether training runs on the CPU (no CUDA GPU); several launched CPU processes then talk over gloo."""
    import torch

    return not torch.cuda.is_available()
