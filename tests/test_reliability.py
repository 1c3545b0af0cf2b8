"""The reliability suite: malformed inputs through the three entry points people run (``radreport info``, the
napari reader, the model loader), each in a fresh process under a hard address-space limit (RLIMIT_AS) with
its peak memory measured (``wait4``'s ru_maxrss). Each case is read (or loaded), or refused in exactly one
line on stderr that names the file; the reader may also decline a file it does not read (napari then says
so). The in-process checks of the same limits are in test_input_limits.py and test_intact_weights.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from napari_radreport.io.limits import MAX_VOLUME_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="RLIMIT_AS and ru_maxrss in KiB are Linux's")

MB = 2**20
# Address space of every process: a reader needs ~150 MB of it (numpy, pydicom, nibabel, Pillow); importing
# torch and transformers takes ~650 MB; the tiny model loads and writes a token in 1 GiB, not in 768 MB.
LIMIT = 1536 * MB
READER_PEAK_MB = 200  # resident memory a reading process may reach on these small files (30-60 MB measured)
BOMB_PEAK_MB = 500  # ...and on a file that claims gigabytes
LOADER_PEAK_MB = 640  # ...a loading process (measured: 250 MB refusing before transformers, 420 MB loaded)
BOMB_SECONDS = 5.0
ENTRY_POINTS = ("info", "reader")

# The command runs as the child of a small launcher that sets the rlimit (the child inherits it) and reports
# the child's ru_maxrss. Not a child of this process: a child's ru_maxrss starts at its parent's resident size
# (Linux counts the parent's memory it was forked from), and this test process may hold gigabytes.
_LAUNCHER = """
import os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, ({0}, {0}))
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as report:
    report.write(f"{{child.returncode}} {{usage.ru_maxrss}}")
"""
# The napari reader, as napari calls it: get_reader, then the function it returns (or no reader at all).
_READER = """
import sys
from napari_radreport._reader import get_reader
from napari_radreport.io import StudyReadError
paths = sys.argv[1:]
read = get_reader(paths[0] if len(paths) == 1 else paths)
if read is None:
    print("declined")
    sys.exit(3)
try:
    layers = read(paths[0] if len(paths) == 1 else paths)
except StudyReadError as exc:
    print(f"StudyReadError: {exc}", file=sys.stderr)
    sys.exit(1)
print("read", len(layers), "layer(s)")
"""


@dataclass
class Run:
    """What one limited process did."""

    code: int
    out: str
    err: list[str]  # stderr, line by line
    peak_mb: float  # its peak resident memory
    seconds: float

    def __str__(self) -> str:
        return (f"exit {self.code}, peak {self.peak_mb:.0f} MB, {self.seconds:.2f} s\n"
                f"stdout: {self.out[-1500:]}\nstderr: {chr(10).join(self.err)[-3000:]}")


def run_limited(args: list[str], *, limit: int = LIMIT, timeout: float = 120.0) -> Run:
    """``args`` in a fresh process, its address space capped at ``limit`` bytes, one thread per library."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(MAX_VOLUME_ENV, None)  # the default budget: half of what the limit leaves
    env.pop("PYTHONWARNINGS", None)  # warnings reach stderr as they would for a user
    with tempfile.TemporaryDirectory() as folder:
        out, err, report = (Path(folder) / name for name in ("out", "err", "report"))
        start = time.monotonic()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER.format(limit), str(report), *args],
                                        stdout=stdout, stderr=stderr, env=env, start_new_session=True)
            try:
                launcher.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and the command it started
                launcher.wait()
                raise
        seconds = time.monotonic() - start
        failed = f"the launcher failed (exit {launcher.returncode}): {err.read_text()[-2000:]}"
        assert report.is_file(), failed
        code, peak_kib = map(int, report.read_text().split())
        return Run(code, out.read_text(errors="replace"), err.read_text(errors="replace").splitlines(),
                   peak_kib / 1024, seconds)


def run_entry(entry: str, paths: list[Path]) -> Run:
    if entry == "info":
        return run_limited([sys.executable, "-m", "napari_radreport.cli", "info", *map(str, paths)])
    return run_limited([sys.executable, "-c", _READER, *map(str, paths)])


def assert_refused(run: Run, entry: str, named: Path, *, says: str = "", peak_mb: float = READER_PEAK_MB):
    """Exit status 1 and exactly one line on stderr, naming the file, within ``peak_mb``."""
    assert run.code == 1, run
    assert len(run.err) == 1, run
    prefix = "radreport: error: " if entry == "info" else "StudyReadError: "
    assert run.err[0].startswith(prefix) and named.name in run.err[0], run
    assert says in run.err[0], run
    assert "MemoryError" not in run.err[0] and "out of memory" not in run.err[0], run
    assert run.peak_mb < peak_mb, run


def assert_read(run: Run, entry: str, *, says: str = "", peak_mb: float = READER_PEAK_MB):
    """Exit status 0, nothing on stderr (warnings are part of what is read: ``info`` prints them)."""
    assert run.code == 0 and run.err == [], run
    assert ("kind: " if entry == "info" else "read ") in run.out and says in run.out, run
    assert run.peak_mb < peak_mb, run


# -- the malformed files ------------------------------------------------------------------------------------

def _ct_slice(path: Path, edit: Callable | None = None, syntax=ExplicitVRLittleEndian) -> Path:
    """pydicom's CT_small.dcm (128 x 128 int16) with its own SOP instance, then ``edit``."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    if edit is not None:
        edit(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def _nifti(path: Path, data: np.ndarray) -> Path:
    nibabel.save(nibabel.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), str(path))
    return path


def _ct_volume() -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1500, (48, 48, 24)).astype(np.int16)


def _claims_2000_cubed(path: Path) -> Path:
    """A 1 KB NIfTI-1 whose header claims 2000 x 2000 x 2000 float32 voxels (30 GB)."""
    header = nibabel.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + bytes(4) + bytes(1024 - 352))
    return path


def _zlib_zeros(count: int, raw: bool = False) -> bytes:
    """``count`` zero bytes compressed (a zlib stream, or raw deflate), built from one repeated fully-flushed
    segment: no time, no memory."""
    chunk = min(count, MB)
    segment = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = segment.compress(bytes(chunk)) + segment.flush(zlib.Z_FULL_FLUSH)
    rest = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    tail = rest.compress(bytes(count % chunk)) + rest.flush()
    stream = block * (count // chunk) + tail
    if raw:
        return stream
    adler = 1  # zlib's checksum of the zeros, a megabyte at a time
    for _ in range(count // chunk):
        adler = zlib.adler32(bytes(chunk), adler)
    adler = zlib.adler32(bytes(count % chunk), adler)
    return b"\x78\xda" + stream + struct.pack(">I", adler)


def _png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """An honest PNG of black 8-bit pixels (400 MB decoded at 20000 x 20000) in under half a megabyte."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = _zlib_zeros(height * (width + 1))  # each row: filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
                     + chunk(b"IEND", b""))
    return path


def _jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A 16 x 16 JPEG whose frame header (SOF0) claims ``width`` x ``height`` pixels."""
    from PIL import Image

    Image.new("L", (16, 16), 128).save(path, quality=90)
    raw = bytearray(path.read_bytes())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def _enhanced_with_text_position(path: Path) -> Path:
    """A 4-frame Enhanced CT whose second frame's ImagePositionPatient is text."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "CT", 4, 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 2.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for i in range(4):
        plane, frame = Dataset(), Dataset()
        if i == 1:
            plane.add_new(0x00200032, "LO", ["left", "0", "0"])
        else:
            plane.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        frame.PlanePositionSequence = Sequence([plane])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.zeros(4 * 64, dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _deflate_bomb(path: Path, side: int = 32768, preamble: bool = True) -> Path:
    """A Deflated Explicit VR Little Endian CT slice whose honest header describes ``side`` x ``side`` int16
    pixels (2 GiB at 32768): 2 MB on disk, and pydicom inflates the whole data set in memory to read even
    its header."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.Rows = ds.Columns = side
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta, body = DicomBytesIO(), DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta)
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixels = side * side * 2
    start = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels)  # PixelData, OW
    stream = start.compress(head) + start.flush(zlib.Z_FULL_FLUSH) + _zlib_zeros(pixels, raw=True)
    path.write_bytes((bytes(128) + b"DICM" if preamble else b"") + meta.getvalue() + stream)
    return path


def _radiograph(path: Path, patient_id: str, name: str) -> Path:
    """A small DX radiograph of patient ``patient_id``."""
    def as_dx(ds):
        ds.Modality, ds.SOPClassUID = "DX", "1.2.840.10008.5.1.4.1.1.1.1"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.PatientID, ds.PatientName = patient_id, name
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "SliceLocation"):
            delattr(ds, keyword)

    return _ct_slice(path, as_dx)


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _unrelated_files(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "data.bin").write_bytes(os.urandom(4096))
    return folder


@dataclass
class Case:
    """A malformed (or control) input, what each entry point must do with it, and what the line says."""

    make: Callable[[Path], list[Path]]
    info: str  # "read" or "refused"
    reader: str  # "read", "refused" or "declined"
    says: str = ""  # in the refusal (or, when read, in info's output)
    peak_mb: float = READER_PEAK_MB
    gap: str = ""  # a known failure (strict xfail): what is wrong, until it is fixed


def _one(name: str, build: Callable[[Path], Path]) -> Callable[[Path], list[Path]]:
    return lambda tmp: [build(tmp / name)]


CASES = {
    "control NIfTI": Case(_one("ct.nii.gz", lambda p: _nifti(p, _ct_volume())), "read", "read", "kind: ct"),
    "truncated DICOM": Case(_one("cut.dcm", lambda p: _cut(_ct_slice(p), 0.6)), "refused", "refused",
                            "truncated"),
    "truncated NIfTI": Case(_one("cut.nii", lambda p: _cut(_nifti(p, _ct_volume()), 0.5)), "refused",
                            "refused"),
    "truncated NIfTI.gz": Case(_one("cut.nii.gz", lambda p: _cut(_nifti(p, _ct_volume()), 0.5)), "refused",
                               "refused"),
    "1 KB NIfTI claiming 2000^3": Case(_one("claims.nii", _claims_2000_cubed), "refused", "refused",
                                       "the header claims 2000 x 2000 x 2000 float32", BOMB_PEAK_MB),
    "PNG decompression bomb": Case(_one("bomb.png", _png_bomb), "refused", "refused",
                                   "400,000,000 pixels, over the", BOMB_PEAK_MB),
    "PNG bomb between 1x and 2x Pillow's limit": Case(
        _one("bomb.png", lambda p: _png_bomb(p, 10000, 9000)), "refused", "refused", "90,000,000 pixels"),
    # A JPEG has no least size for its pixels (arithmetic coding spends a fraction of a bit on a blank block):
    # under Pillow's pixel limit, 16 x 16 of data claiming 9000 x 9000 opens (libjpeg makes up the rest).
    "JPEG with lying dimensions": Case(_one("lying.jpg", lambda p: _jpeg_claiming(p, 9000, 9000)), "read",
                                       "read", "lying.jpg: shape (9000, 9000)", BOMB_PEAK_MB),
    "JPEG claiming 30000^2": Case(_one("huge.jpg", lambda p: _jpeg_claiming(p, 30000, 30000)), "refused",
                                  "refused", "900,000,000 pixels, over the"),
    "NaN voxels": Case(_one("nan.nii.gz", lambda p: _nifti(p, np.where(_ct_volume() > 1400, np.nan,
                                                                      _ct_volume()).astype(np.float32))),
                       "read", "read", "are NaN or infinite"),
    "enhanced CT with text in ImagePositionPatient": Case(
        _one("enhanced.dcm", _enhanced_with_text_position), "refused", "refused",
        "frame 2: ImagePositionPatient 'left\\0\\0' is not three finite numbers"),
    "deflated DICOM (control)": Case(
        _one("deflated.dcm", lambda p: _ct_slice(p, syntax=DeflatedExplicitVRLittleEndian)), "read", "read",
        "shape (1, 128, 128)"),
    "deflated DICOM bomb": Case(_one("bomb.dcm", _deflate_bomb), "refused", "refused", "memory budget",
                                BOMB_PEAK_MB),
    "empty .nii": Case(_one("empty.nii", _empty), "refused", "refused"),
    "empty .dcm": Case(_one("empty.dcm", _empty), "refused", "declined"),
    "folder of unrelated files": Case(lambda tmp: [_unrelated_files(tmp / "unrelated")], "refused",
                                      "declined"),
}
MIXED_PATIENTS = Case(lambda tmp: [_radiograph(tmp / "a.dcm", "PAT-A", "Doe^Jane"),
                                   _radiograph(tmp / "b.dcm", "PAT-B", "Roe^Richard")],
                      "refused", "refused", "PatientID")


def _check(case: Case, entry: str, tmp_path: Path) -> Run:
    paths = case.make(tmp_path)
    run = run_entry(entry, paths)
    expected = getattr(case, entry)
    if expected == "read":
        assert_read(run, entry, says=case.says if entry == "info" else "", peak_mb=case.peak_mb)
    elif expected == "declined":
        assert run.code == 3 and run.out.strip() == "declined" and run.err == [], run
    else:
        assert_refused(run, entry, paths[0], says=case.says, peak_mb=case.peak_mb)
    return run


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=case.gap)]
                                               if case.gap else [], id=name) for name, case in CASES.items()])
def test_each_malformed_file_is_read_or_refused_in_one_line_within_the_memory_limit(name, entry, tmp_path):
    _check(CASES[name], entry, tmp_path)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_1kb_nifti_claiming_2000_cubed_voxels_is_refused_in_under_5_s_and_500_mb(entry, tmp_path):
    run = _check(CASES["1 KB NIfTI claiming 2000^3"], entry, tmp_path)
    assert (tmp_path / "claims.nii").stat().st_size == 1024
    assert run.seconds < BOMB_SECONDS and run.peak_mb < BOMB_PEAK_MB, run


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_radiographs_of_two_patients_are_refused_in_one_line(entry, tmp_path):
    _check(MIXED_PATIENTS, entry, tmp_path)


@pytest.mark.parametrize("preamble", [True, False])
def test_the_deflate_guard_reads_the_file_meta_as_pydicom_does(tmp_path, monkeypatch, preamble):
    """In this process, a budget of 100 MB: the guard unpacks 100 MB of the 2 GiB, then refuses."""
    from napari_radreport import StudyReadError, load_study

    monkeypatch.setenv(MAX_VOLUME_ENV, "100")
    path = _deflate_bomb(tmp_path / "bomb.dcm", preamble=preamble)
    with pytest.raises(StudyReadError) as refused:
        load_study(path)
    assert str(refused.value) == (
        f"{path}: this deflate-compressed DICOM file (2.0 MB) unpacks to more than the 100 MB left of the "
        "memory budget (RADREPORT_MAX_VOLUME_MB=100), and pydicom unpacks it whole: refused as a possible "
        "decompression bomb; raise the budget with RADREPORT_MAX_VOLUME_MB=<MB>")


# -- the model loader ---------------------------------------------------------------------------------------

class _Payload:
    """Unpickled, it runs code: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _pickle_payload(path: Path, marker: Path) -> Path:
    """A .bin/.pt "checkpoint" that runs code when unpickled; shown live once, in a throwaway process."""
    path.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"],
                   check=True)
    assert marker.read_text() == "ran"
    marker.unlink()
    return path


def _lying_safetensors(path: Path) -> None:
    """The first tensor's shape claims 10^10 elements; its offsets (and the file) stay as they are."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [100000, 100000]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])


def _garbage(path: Path) -> None:
    path.write_bytes(b'{"version": "1.0", "model": \x00\xff garbage')


def _no_weights(folder: Path) -> Path:
    (folder / "model.safetensors").unlink()
    return folder


def _pickle_only(folder: Path) -> Path:
    (folder / "model.safetensors").unlink()
    return _pickle_payload(folder / "pytorch_model.bin", folder.parent / "marker")


def _pickled_adapter(folder: Path) -> Path:
    adapter = folder / "adapters" / "evil"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "task_type": None,
         "base_model_name_or_path": None, "inference_mode": True}))
    return _pickle_payload(adapter / "adapter_model.bin", folder.parent / "marker")


def _damaged(file: str, damage: Callable[[Path], object]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        damage(folder / file)
        return folder / file

    return build


LOADER_CASES = {
    "no weights": (_no_weights, "no weights (*.safetensors) found"),
    "truncated safetensors": (_damaged("model.safetensors", lambda p: _cut(p, 0.5)),
                              "not a readable safetensors file (cut short"),
    "safetensors header claiming 2^62 bytes": (
        _damaged("model.safetensors", lambda p: p.write_bytes(struct.pack("<Q", 2**62) + p.read_bytes()[8:])),
        "the header says it is 4611686018427387904 bytes long"),
    "pickle weights only": (_pickle_only, "only pickle weights (pytorch_model.bin)"),
    "safetensors tensor claiming 10^10 elements": (_damaged("model.safetensors", _lying_safetensors),
                                                   "invalid shape, data type, or offset"),
    "garbage tokenizer.json": (_damaged("tokenizer.json", _garbage), "the tokenizer cannot be read"),
    "pickled adapter": (_pickled_adapter, "adapter_model.bin"),
}
# These load the model before they refuse (transformers too: ~5 s each); the others stop at the weights check.
SLOW_LOADER_CASES = {"safetensors tensor claiming 10^10 elements", "garbage tokenizer.json",
                     "pickled adapter"}
# A tqdm progress bar (transformers' "Loading weights"), redrawn with carriage returns.
_PROGRESS_BAR = re.compile(r"^[A-Z][\w ]*: +\d+%\|")


def _loader_param(name: str, gap: str | None = None):
    marks = [pytest.mark.slow] if name in SLOW_LOADER_CASES else []
    if gap:
        marks.append(pytest.mark.xfail(strict=True, reason=gap))
    return pytest.param(name, marks=marks, id=name)


def run_loader(folder: Path, study: Path) -> Run:
    """``radreport report --model folder``: the engine's load, as the command line and the docks run it."""
    return run_limited([sys.executable, "-m", "napari_radreport.cli", "report", str(study),
                        "--model", str(folder), "--max-new-tokens", "1", "--task", "impression",
                        "--allow-out-of-scope"])


@pytest.fixture(scope="module")
def loader_run(tiny_ct_model, tmp_path_factory) -> Callable[[str], tuple[Run, Path, Path]]:
    """Each loader case run once (two tests read it): (its run, the model folder, the damaged file)."""
    study = _nifti(tmp_path_factory.mktemp("study") / "ct.nii.gz", _ct_volume())
    done: dict[str, tuple[Run, Path, Path]] = {}

    def run(name: str) -> tuple[Run, Path, Path]:
        if name not in done:
            folder = tmp_path_factory.mktemp("loader") / "model"
            shutil.copytree(tiny_ct_model, folder)
            named = folder if name == "intact" else LOADER_CASES[name][0](folder)
            done[name] = (run_loader(folder, study), folder, named)
        return done[name]

    return run


@pytest.mark.slow
def test_the_loader_loads_an_intact_model_within_the_limit(loader_run):
    run, _, _ = loader_run("intact")
    assert run.code == 0, run
    assert any(line.startswith("radreport: Hashing the weights for provenance") for line in run.err), run
    assert run.peak_mb < LOADER_PEAK_MB, run


@pytest.mark.parametrize("name", [_loader_param(name) for name in LOADER_CASES])
def test_a_damaged_model_folder_is_refused_in_one_line_naming_the_file(name, loader_run):
    """Exit status 1; on stderr the command's progress lines (and progress bars), then exactly one error line
    that names the file and its folder; nothing else (no warning, no traceback)."""
    run, folder, named = loader_run(name)
    assert run.code == 1 and run.err, run
    *before, refusal = run.err
    assert refusal.startswith("radreport: error: ") and str(folder) in refusal and named.name in refusal, run
    assert LOADER_CASES[name][1] in refusal, run
    assert "MemoryError" not in refusal and "out of memory" not in refusal, run
    for line in before:
        own = line.startswith("radreport: ") and not line.startswith("radreport: error: ")
        assert own or not line.strip() or _PROGRESS_BAR.match(line), run
    assert run.peak_mb < LOADER_PEAK_MB, run


@pytest.mark.parametrize("name", ["pickle weights only", _loader_param("pickled adapter")])
def test_a_pickle_payload_in_a_model_folder_never_runs(name, loader_run):
    run, folder, _ = loader_run(name)
    assert run.code == 1, run
    assert not (folder.parent / "marker").exists(), "the pickle payload ran"
