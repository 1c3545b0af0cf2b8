"""From a Study to model inputs, as a recipe's ``preprocess`` and ``prompt`` sections say.

CT: resample to the recipe's spacing (trilinear, voxel centres kept), then the intensity step (HU window or
per-volume min-max, both to [0, 1]), then crop/pad (centre) or resize to the target shape, then channels.
Radiographs (at most ``max_images``; more is an InputError) stitched horizontally (RRG24) or kept separate,
padded to square, resized and normalised with CLIP's published mean and standard deviation. For a
transformers processor (``stitched_picture``), a radiograph is its file's own 8-bit pixels (``own_pixels``),
never re-windowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class InputError(ValueError):
    """A study this model cannot take (wrong modality, too many images); the message says why."""


@dataclass(frozen=True)
class Preprocess:
    target_shape: tuple[int, ...]
    spacing_mm: tuple[float, float, float] | None = None
    intensity: str = "minmax"  # "minmax", "hu_window" or "clip_normalize"
    hu_window: tuple[float, float] | None = None
    resize: str = "resize"  # "resize" or "crop_or_pad"
    channels: int = 1
    stitch: str = "horizontal"  # radiographs: "horizontal" or "separate"
    max_images: int = 4

    @classmethod
    def from_recipe(cls, section: dict) -> Preprocess:
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        for key in ("target_shape", "spacing_mm", "hu_window"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)

    @property
    def signature(self) -> str:
        """A stable text key for caches of encoded studies."""
        return repr(sorted(self.__dict__.items()))


def _resampled_size(shape, spacing, target) -> list[int]:
    """Voxels along each axis after resampling ``shape`` from ``spacing`` to ``target`` spacing (mm)."""
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target)]


def _resample(volume: torch.Tensor, spacing, target) -> torch.Tensor:
    size = _resampled_size(volume.shape[-3:], spacing, target)
    return F.interpolate(volume[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]


def _crop_start(have: int, want: int) -> int:
    """Centre crop or pad along one axis: the first kept voxel (crop), or minus the
    voxels padded before (pad)."""
    return (have - want) // 2 if have > want else -((want - have) // 2)


def _crop_or_pad(volume: torch.Tensor, shape, fill: float) -> torch.Tensor:
    for axis, want in enumerate(shape):
        have = volume.shape[axis]
        if have > want:
            volume = volume.narrow(axis, _crop_start(have, want), want)
        elif have < want:
            before = -_crop_start(have, want)
            pad_shape = list(volume.shape)
            pad_shape[axis] = want
            padded = torch.full(pad_shape, fill, dtype=volume.dtype)
            padded.narrow(axis, before, have).copy_(volume)
            volume = padded
    return volume


def volume_to_pixels(study, spec: Preprocess) -> torch.Tensor:
    """(1, C, D, H, W) float32 from a CT/volume Study (CT-RATE's own steps for ``intensity: "ct_rate"``,
    CT-CHAT's encoder: modeling/ct_rate.py)."""
    if spec.intensity == "ct_rate":
        from napari_radreport.modeling.ct_rate import ct_rate_pixels

        return ct_rate_pixels(study, spec)
    if not study.is_volume:
        raise InputError(f"this model reads CT volumes; the study is a {study.kind}")
    array = study.array
    if array.ndim != 3:
        raise InputError(f"this model reads one 3-D volume; the study has shape {array.shape}")
    if spec.spacing_mm is not None and None in study.spacing:
        raise InputError("the study's voxel spacing is unknown; the recipe resamples to a spacing in mm")
    # our own float32 copy (np.array copies even a float32 array), so every step below may work in place
    volume = _finite(torch.from_numpy(np.array(array, dtype=np.float32, order="C")))
    if spec.spacing_mm is not None:
        volume = _resample(volume, study.spacing, spec.spacing_mm)
    if spec.intensity == "hu_window":
        lo, hi = spec.hu_window or (-1000.0, 1000.0)
        volume.clamp_(lo, hi).sub_(lo).div_(hi - lo)
    elif spec.intensity == "minmax":
        lo, hi = volume.min(), volume.max()
        if hi > lo:
            volume.sub_(lo).div_(hi - lo)
        else:
            volume.zero_()
    else:
        raise InputError(f"intensity step {spec.intensity!r} is not for volumes")
    shape = tuple(spec.target_shape)
    if spec.resize == "crop_or_pad":
        volume = _crop_or_pad(volume, shape, fill=0.0)
    else:
        volume = F.interpolate(volume[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]
    return volume[None, None].expand(1, spec.channels, *shape).contiguous()


def patient_to_pixel_index(study, spec: Preprocess, position) -> np.ndarray:
    """Where an LPS position (mm) lands in ``volume_to_pixels(study, spec)``: a continuous (D, H, W) index.

    Follows the same steps: resampling (``align_corners=False``: output o covers input (o + 0.5) * in / out -
    0.5), then the centre crop/pad or the resize to the target shape (CT-RATE's own for ``"ct_rate"``).
    """
    if spec.intensity == "ct_rate":
        from napari_radreport.modeling.ct_rate import ct_rate_index

        return ct_rate_index(study, spec, position)
    index = study.image.patient_to_index(position)
    shape = study.array.shape[-3:]
    if spec.spacing_mm is not None:
        resampled = _resampled_size(shape, study.spacing, spec.spacing_mm)
        index, shape = (index + 0.5) * np.asarray(resampled) / np.asarray(shape) - 0.5, resampled
    target = spec.target_shape
    if spec.resize == "crop_or_pad":
        return index - np.array([_crop_start(have, want) for have, want in zip(shape, target)])
    return (index + 0.5) * np.asarray(target) / np.asarray(shape) - 0.5


def _finite(data: torch.Tensor) -> torch.Tensor:
    """``data`` with NaN and -inf set to its lowest finite value and +inf to its highest, in place (the
    readers warn about such voxels; a model must never see them: clamps and min-max keep NaN)."""
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        values = data[finite]
        low, high = (values.min().item(), values.max().item()) if values.numel() else (0.0, 0.0)
        torch.nan_to_num_(data, nan=low, posinf=high, neginf=low)
    return data


def _unit_range(image) -> torch.Tensor:
    """A radiograph to [0, 1] through its display window (or its own range)."""
    from napari_radreport.io.windows import default_contrast_limits

    lo, hi = default_contrast_limits("xray_set", image.array, image.file_window)
    data = _finite(torch.from_numpy(np.array(image.array, dtype=np.float32)))
    return ((data - lo) / max(hi - lo, 1e-6)).clamp(0, 1)


def _side_by_side_widths(shapes: list[tuple[int, int]]) -> tuple[int, list[int]]:
    """The common height (the tallest image's) and each image's width once scaled to it."""
    height = max(h for h, _ in shapes)
    return height, [max(1, round(w * height / h)) for h, w in shapes]


def _side_by_side(images: list[torch.Tensor]) -> torch.Tensor:
    """Images scaled to a common height (the tallest) and joined left to right, as the
    RRG24 seed stitched them."""
    height, widths = _side_by_side_widths([tuple(im.shape) for im in images])
    scaled = [F.interpolate(im[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
              for im, width in zip(images, widths)]
    return torch.cat(scaled, dim=1)


def _square_padding(h: int, w: int) -> tuple[int, int, int]:
    """The square's side and the rows and columns padded before the image, to centre it."""
    n = max(h, w)
    return n, (n - h) // 2, (n - w) // 2


def _square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Pad to a square (centred, black) then resize: keeps the aspect ratio."""
    h, w = image.shape
    n, top, left = _square_padding(h, w)
    padded = torch.zeros(n, n)
    padded[top:top + h, left:left + w] = image
    return F.interpolate(padded[None, None], size=(side, side), mode="bilinear", align_corners=False,
                         antialias=True)[0, 0]


def check_image_count(study, max_images: int) -> None:
    """A clear error when a radiograph set has more images than the model takes."""
    if len(study.images) > max_images:
        raise InputError(f"this model takes at most {max_images} radiographs; the study has "
                         f"{len(study.images)} (open at most {max_images} of them)")


def radiographs_to_pixels(study, spec: Preprocess) -> torch.Tensor:
    """(N, 3, S, S): one stitched image (N = 1) or each radiograph separately."""
    if study.kind != "xray_set":
        raise InputError(f"this model reads chest radiographs; the study is a {study.kind}")
    check_image_count(study, spec.max_images)
    images = [_unit_range(im) for im in study.images]
    side = int(spec.target_shape[-1])
    if spec.stitch == "horizontal":
        squares = [_square(_side_by_side(images), side)]
    else:
        squares = [_square(im, side) for im in images]
    pixels = torch.stack(squares)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).contiguous()


def radiograph_black() -> torch.Tensor:
    """(1, 3, 1, 1): the value a black pixel has in ``radiographs_to_pixels`` (0 once CLIP-normalised), what
    attribution measures a pixel's input against."""
    return (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)).view(1, 3, 1, 1)


def radiograph_pixel_index(study, spec: Preprocess, image: int, position) -> tuple[int, np.ndarray]:
    """Where a (row, column) position of radiograph ``image`` lands in ``radiographs_to_pixels(study, spec)``:
    which of its images and the continuous (row, column) there. Follows the same steps: side by side at the
    tallest height (``align_corners=False``: output o covers input (o + 0.5) * in / out - 0.5), padding to a
    centred square, resizing to the target side."""
    shapes = [tuple(int(n) for n in im.array.shape[-2:]) for im in study.images]
    index = np.asarray(position, float)
    if spec.stitch == "horizontal":
        height, widths = _side_by_side_widths(shapes)
        h, w = shapes[image]
        index = (index + 0.5) * np.array([height / h, widths[image] / w]) - 0.5
        index, shape, which = index + np.array([0.0, sum(widths[:image])]), (height, sum(widths)), 0
    else:
        shape, which = shapes[image], image
    n, top, left = _square_padding(*shape)
    side = int(spec.target_shape[-1])
    return which, (index + np.array([top, left]) + 0.5) * side / n - 0.5


def radiograph_grids(study, spec: Preprocess) -> list:
    """One ``grounding.radiographs.ViewGrid`` per radiograph of ``study``: its pixels' place in
    ``radiographs_to_pixels(study, spec)``, ``radiograph_pixel_index`` read off at three points."""
    from napari_radreport.grounding.geometry import affine_of
    from napari_radreport.grounding.radiographs import ViewGrid

    side = int(spec.target_shape[-1])
    grids = []
    for n, image in enumerate(study.images):
        which = radiograph_pixel_index(study, spec, n, (0.0, 0.0))[0]
        affine = affine_of(lambda rc, n=n: radiograph_pixel_index(study, spec, n, rc)[1], dims=2)
        grids.append(ViewGrid(n, tuple(int(v) for v in image.array.shape[-2:]), which, (side, side),
                              affine[:2, :2], affine[:2, 2]))
    return grids


def own_pixels(image) -> np.ndarray:
    """A radiograph as the 8-bit picture its file gives, (H, W) uint8, with no window of this project's:
    through the file's own display window when it has one (DICOM's centre and width: centre +- width // 2, as
    Google's DICOM reader for MedGemma windows CR/DX), else an 8-bit image exactly as read, else its own value
    range; scaled to 0..255 and rounded. A MONOCHROME1 image was inverted when read (io/xray.py), its window
    with it."""
    array = image.array
    if image.file_window is None and array.dtype == np.uint8:
        return array
    data = _finite(torch.from_numpy(np.array(array, dtype=np.float64))).numpy()
    if image.file_window is not None:
        centre, width = image.file_window
        low, high = centre - width // 2, centre + width // 2
    else:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((np.clip(data, low, high) - low) / (high - low) * 255.0).astype(np.uint8)


def stitched_picture(study, max_images: int = 4):
    """The radiographs (at most ``max_images``) side by side, at the tallest one's height, as one 8-bit RGB
    PIL image of their own pixels (``own_pixels``; for transformers processors)."""
    from PIL import Image

    if study.kind != "xray_set":
        raise InputError(f"this model reads chest radiographs; the study is a {study.kind}")
    check_image_count(study, max_images)
    pictures = [own_pixels(im) for im in study.images]
    if len(pictures) == 1:
        gray = pictures[0]
    else:
        stitched = _side_by_side([torch.from_numpy(p.astype(np.float32)) for p in pictures])
        gray = stitched.round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(gray).convert("RGB")


def prompt_ids(tokenizer, question: str, *, image_token: str, num_image_tokens: int, n_images: int = 1,
               chat_template: bool = False, history: list[tuple[str, str]] | tuple = ()) -> torch.Tensor:
    """Token ids of a prompt with the image placeholder expanded to the model's token count.

    ``history`` holds earlier (question, answer) turns about the same image; the image stays in the
    first turn, so a follow-up prompt starts with the previous one (what the prefix cache reuses).
    """
    placeholder = image_token * (num_image_tokens * n_images)
    turns = [*history, (question, None)]
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = []
        for i, (asked, answer) in enumerate(turns):
            messages.append({"role": "user", "content": f"{placeholder}\n{asked}" if i == 0 else asked})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:  # M3D: BOS + image tokens + question, no template; earlier turns joined by spaces
        words = " ".join(part for asked, answer in turns for part in (asked, answer) if part is not None)
        ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + \
            tokenizer(placeholder + " " + words, add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    count = sum(1 for i in ids if i == image_id)
    if count != num_image_tokens * n_images:
        raise InputError(f"the tokenizer split {image_token!r}: {count} image tokens instead of "
                         f"{num_image_tokens * n_images}; add it as a special token")
    return torch.tensor([ids])


def model_grid(study, spec: Preprocess):
    """The ``grounding.geometry.ModelGrid`` between ``study``'s voxels and ``volume_to_pixels(study, spec)``:
    ``patient_to_pixel_index`` read off at four points (every step is affine, so this is exact)."""
    from napari_radreport.grounding.geometry import ModelGrid, StudyGrid, affine_of

    grid = StudyGrid.of(study)
    affine = affine_of(lambda study_index: patient_to_pixel_index(study, spec, grid.to_lps(study_index)))
    return ModelGrid(affine[:3, :3], affine[:3, 3], tuple(int(n) for n in spec.target_shape[-3:]), grid)
