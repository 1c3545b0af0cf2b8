"""Grounding: the model grid's geometry against the processor, sentence spans and tokens, locations from
heatmaps, and the engine's ``ground`` tasks on the demo model and on phantoms it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport.engine.attribution import sentence_token_groups
from napari_radreport.grounding.locate import location_from_heatmap
from napari_radreport.grounding.sentences import report_sentences
from napari_radreport.io.study import ImageData, Study
from napari_radreport.modeling.processor import Preprocess, model_grid, patient_to_pixel_index


def _oblique_axes_study(shape=(18, 10, 14), spacing=(2.5, 1.0, 1.5)) -> Study:
    direction = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # axis 0 -> S, 1 -> -P, 2 -> L
    image = ImageData(array=np.zeros(shape, np.float32), spacing=spacing, modality="CT",
                      origin=(-10.0, 25.0, -30.0), direction=direction)
    return Study(kind="ct", images=[image])


SPECS = [Preprocess(target_shape=(40, 12, 20), spacing_mm=(2.0, 1.25, 1.25), resize="crop_or_pad"),
         Preprocess(target_shape=(16, 6, 9), spacing_mm=(2.0, 1.25, 1.25), resize="crop_or_pad"),
         Preprocess(target_shape=(16, 12, 9), spacing_mm=(2.0, 1.25, 1.25), resize="resize"),
         Preprocess(target_shape=(16, 12, 9), resize="resize")]


@pytest.mark.parametrize("spec", SPECS)
def test_the_model_grid_is_the_processor_geometry_and_inverts_it(spec):
    study = _oblique_axes_study()
    grid = model_grid(study, spec)
    rng = np.random.default_rng(0)
    for index in rng.uniform(-1, 12, size=(20, 3)):
        model = patient_to_pixel_index(study, spec, study.image.index_to_patient(index))
        np.testing.assert_allclose(grid.matrix @ index + grid.offset, model, atol=1e-9)
        np.testing.assert_allclose(grid.study_index(model), index, atol=1e-9)
        np.testing.assert_allclose(grid.patient(index), study.image.index_to_patient(index), atol=1e-9)


def test_ct_rate_preprocessing_inverts_on_a_real_nifti(abdomen_nifti):
    from napari_radreport import load_study

    study = load_study(abdomen_nifti)
    spec = Preprocess(target_shape=(120, 160, 160), spacing_mm=(3.0, 2.0, 2.0), intensity="ct_rate",
                      hu_window=(-1000.0, 1000.0), resize="crop_or_pad")
    grid = model_grid(study, spec)
    for index in ((0, 0, 0), (60.5, 50.0, 11.0), (121, 100, 111)):
        model = patient_to_pixel_index(study, spec, study.image.index_to_patient(index))
        np.testing.assert_allclose(grid.study_index(model), index, atol=1e-6)
    # CT-RATE reorders the axes (k, i, j): the map is a permutation, not a diagonal
    diagonal = np.diag(np.diag(grid.matrix))
    assert np.count_nonzero(np.abs(grid.matrix) > 1e-9) == 3 and not np.allclose(diagonal, grid.matrix)


def test_padding_is_outside_the_field_of_view_and_a_hot_voxel_lands_on_its_study_voxel():
    study = _oblique_axes_study()
    spec = SPECS[0]  # pads along axes 1 and 2 (10 x 1.0 mm -> 8 voxels of 1.25 in 12)
    grid = model_grid(study, spec)
    inside = grid.field_of_view()
    assert not inside[:, 0].any() and not inside[:, -1].any() and inside[20, 6, 10]
    heat = np.zeros(spec.target_shape, np.float32)
    heat[20, 6, 10] = 1.0
    where = grid.study_index((20, 6, 10))
    on_study = grid.to_study(heat)
    assert np.unravel_index(np.argmax(on_study), on_study.shape) == tuple(np.round(where).astype(int))


def test_a_heatmap_peak_becomes_the_patient_position_it_came_from():
    study = _oblique_axes_study(shape=(30, 40, 40), spacing=(2.0, 1.0, 1.0))
    spec = Preprocess(target_shape=(32, 32, 32), spacing_mm=(2.0, 1.25, 1.25), resize="crop_or_pad")
    grid = model_grid(study, spec)
    target = study.image.index_to_patient((12.0, 21.0, 9.0))
    at = np.round(patient_to_pixel_index(study, spec, target)).astype(int)
    heat = np.zeros(spec.target_shape, np.float32)
    heat[tuple(at)] = 5.0
    location = location_from_heatmap(heat, grid, "test")
    assert np.linalg.norm(np.asarray(location.peak_lps_mm) - target) < 1.0  # within a model voxel
    low, high = (np.asarray(c) for c in location.box_lps_mm)
    assert np.all(low <= location.peak_lps_mm) and np.all(location.peak_lps_mm <= high)
    assert location.mask.shape == study.array.shape and location.mask.any()
    assert location_from_heatmap(np.zeros(spec.target_shape), grid, "test") is None


def test_a_saturated_probability_map_peaks_inside_its_region_not_on_its_first_voxel():
    from napari_radreport.grounding.locate import interior_peak

    probability = np.zeros((12, 16, 16), np.float32)
    probability[2:9, 3:12, 5:14] = 1.0  # a head's sigmoid at exactly 1.0 over a whole region
    probability[2, 3, 5:14] = 0.999  # a fraying edge
    mask = probability >= 0.5
    raw = np.unravel_index(int(np.argmax(probability)), probability.shape)
    assert raw == (2, 4, 5)  # the raw maximum: the plateau's first voxel, a corner of the region
    peak = interior_peak(probability, mask)
    assert tuple(peak) == (5, 7, 9)  # the middle of the region
    assert interior_peak(probability, np.zeros_like(mask)) is None


def test_sentences_that_state_a_finding_are_the_ones_grounded():
    text = ("Findings:\nThere is a 12 mm nodule in the right upper lobe. No pleural effusion. The heart is "
            "normal in size.\n\nImpression:\nPossible consolidation in the left lower lobe.")
    sentences = report_sentences(text)
    assert [(s.section, s.finding) for s in sentences] == [
        ("findings", "nodule"), ("findings", None), ("findings", None), ("impression", "consolidation")]
    assert all(text[s.start:s.end] == s.text for s in sentences)


def test_a_sentence_owns_the_tokens_that_overlap_it():
    offsets = [(0, 5), (5, 8), (8, 9), (9, 15), (15, 16)]  # "There is. Big." -> ...
    assert sentence_token_groups(offsets, [(0, 9), (10, 16)], first=100) == [[100, 101, 102], [103, 104]]


# -- the engine, on the demo model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_engine():
    from napari_radreport.engine import Engine, default_model

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    engine = Engine()
    engine.load()
    yield engine
    engine.shutdown()


def _phantom(tmp_path, index: int):
    from napari_radreport import load_study
    from napari_radreport.data.phantoms.generate import phantom_record, write_nifti

    record, volume = phantom_record(index, 0, "test")
    path = tmp_path / f"phantom-{index}.nii.gz"
    write_nifti(path, volume)
    return record, load_study(path)


def test_attribution_grounds_a_nodule_sentence_of_the_demo_model_at_the_nodule(demo_engine, tmp_path):
    record, study = _phantom(tmp_path, 2162)  # held out: a test phantom of the demo model's seed
    (centre,) = record.positions["Lung nodule"]
    text = "Findings:\nLeft upper lobe nodule measuring 10 mm. No pleural effusion."
    sentences = demo_engine.ground(study, text, method="gradient_x_input")
    nodule, denial = sentences
    assert nodule.finding == "nodule" and denial.location is None and denial.finding is None
    assert nodule.location.method == "attribution:gradient_x_input"
    assert np.linalg.norm(np.asarray(nodule.location.peak_lps_mm) - centre) < 15.0
    assert nodule.as_dict()["location"]["peak_lps_mm"] == [round(v, 2) for v in nodule.location.peak_lps_mm]
    grounder = demo_engine._grounder
    cached = len(grounder._cache)
    again = demo_engine.ground(study, text, method="gradient_x_input")
    assert len(grounder._cache) == cached and again[0].location.peak_lps_mm == nodule.location.peak_lps_mm


def test_the_demo_model_grounds_with_its_trained_head_by_default(demo_engine, tmp_path):
    from napari_radreport import load_study
    from napari_radreport.data.phantoms.generate import phantom_with_labels, write_label_nifti

    record, _volume, labels = phantom_with_labels(2162, 0, "test")  # held out from the head's training too
    _record, study = _phantom(tmp_path, 2162)
    write_label_nifti(tmp_path / "labels.nii.gz", labels)
    nodule = load_study(tmp_path / "labels.nii.gz").array == record.masks["labels"]["Lung nodule"]
    (sentence,) = demo_engine.ground_answer(study, "Is there a lung nodule?", "A left upper lobe nodule.")
    assert demo_engine._grounder.method == "head" and sentence.location.method == "grounding-head"
    # measured on this phantom: the peak 5.3 mm from the nodule's centre and inside it, Dice 0.72
    assert np.linalg.norm(np.asarray(sentence.location.peak_lps_mm) - record.positions["Lung nodule"][0]) < 10
    assert nodule[tuple(np.round(sentence.location.peak_index).astype(int))]
    mask = sentence.mask
    assert mask.shape == nodule.shape and 2 * (mask & nodule).sum() / (mask.sum() + nodule.sum()) > 0.5


def test_a_report_result_carries_its_questions_and_grounds_with_them(demo_engine, tmp_path):
    _record, study = _phantom(tmp_path, 2168)
    result = demo_engine.report(study)
    assert set(result.questions) == {"findings", "impression"}
    assert "Abnormalities:" in result.questions["findings"]  # the demo model's reports are guided
    sentences = demo_engine.ground(study, result.text, questions=result.questions)
    trained = set(demo_engine.runner.model.config.grounding_head["findings"])
    stated = [s for s in sentences if s.finding in trained]
    assert stated and all(s.location is not None or s.why_none.startswith("no voxel") for s in stated)
    assert any(s.location is not None for s in stated)
    (emphysema,) = demo_engine.ground_answer(study, "Any emphysema?", "There is emphysema in both lungs.")
    assert emphysema.location is None  # drawn in no phantom's mask: the head never learned where it is
    assert emphysema.why_none == "the grounding head was not trained to find emphysema"


def test_a_chat_answer_and_a_diagnosis_label_are_grounded(demo_engine, tmp_path):
    record, study = _phantom(tmp_path, 2168)
    (centre,) = record.positions["Lung nodule"]
    answer = "A 26 mm right upper lobe nodule."
    (sentence,) = demo_engine.ground_answer(study, "Is there a lung nodule?", answer,
                                            method="gradient_x_input")
    assert sentence.section == "answer" and sentence.finding == "nodule" and sentence.location is not None
    row = demo_engine.ground_label(study, "Lung nodule", method="gradient_x_input")
    assert row.finding == "nodule" and np.linalg.norm(np.asarray(row.location.peak_lps_mm) - centre) < 15.0


# -- exports ---------------------------------------------------------------------------------------------
def test_the_json_export_carries_each_sentence_and_an_edited_one_loses_its_location(tmp_path):
    import json

    from napari_radreport.export import ReportRecord, export_report

    location = {"method": "attribution:gradient_x_input", "peak_lps_mm": [1.0, 2.0, 3.0],
                "box_lps_mm": [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]}
    grounded = [{"section": "findings", "text": "A 12 mm nodule in the right upper lobe.",
                 "finding": "nodule", "location": location},
                {"section": "findings", "text": "Consolidation in the left lower lobe.",
                 "finding": "consolidation", "location": location}]
    text = ("INDICATION:\nCough.\n\nFINDINGS:\nA 12 mm  nodule in the right upper lobe. Consolidation in the "
            "right lower lobe. No effusion.\n\nIMPRESSION:\nNodule.")
    record = ReportRecord(final_text=text, ai_draft=text, grounding=grounded)
    written = export_report(record, tmp_path / "report.json")
    sentences = json.loads(written.read_text())["sentences"]
    assert [(s["section"], s["finding"]) for s in sentences] == [
        ("findings", "nodule"), ("findings", "consolidation"), ("findings", None), ("impression", "nodule")]
    assert sentences[0]["location"] == location  # white space aside, the same sentence
    assert sentences[1]["location"] is None
    assert sentences[1]["why_none"] == "written or edited after grounding"
    assert sentences[2]["location"] is None and "why_none" not in sentences[2]
    never = ReportRecord(final_text=text).as_dict()["sentences"]
    assert never[0]["location"] is None and never[0]["why_none"] == "not grounded"


def test_a_draft_keeps_its_grounding_through_saving_and_history(tmp_path):
    from napari_radreport.drafts import Draft, DraftStore

    store = DraftStore(tmp_path)
    draft = Draft("study-1", ai_draft="Findings:\nNodule.", text="Findings:\nNodule.",
                  grounding=[{"section": "findings", "text": "Nodule.", "finding": "nodule",
                              "location": None}],
                  questions={"findings": "Describe the findings."})
    store.save(draft)
    loaded = store.load("study-1")
    assert loaded.grounding == draft.grounding and loaded.questions == draft.questions
    loaded.start_new_ai_draft({})
    assert loaded.grounding == [] and loaded.previous[-1].grounding == draft.grounding
    loaded.restore(0)
    assert loaded.grounding == draft.grounding


def test_report_ground_prints_each_location_and_writes_them(tmp_path, capsys):
    import json

    from napari_radreport.cli import main
    from napari_radreport.data.phantoms.generate import phantom_record, write_nifti
    from napari_radreport.engine import default_model

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    _record, volume = phantom_record(2168, 0, "test")
    write_nifti(tmp_path / "p.nii.gz", volume)
    out = tmp_path / "report.json"
    assert main(["report", str(tmp_path / "p.nii.gz"), "--ground", "--out", str(out)]) == 0
    printed = capsys.readouterr().err
    sentences = json.loads(out.read_text())["sentences"]
    located = [s for s in sentences if s["location"]]
    assert located and all(s["finding"] for s in located)
    assert f"radreport: findings: {located[0]['text']!r}: peak at LPS (" in printed


def test_a_study_mask_on_the_model_grid_covers_the_same_place():
    study = _oblique_axes_study(shape=(30, 40, 40), spacing=(2.0, 1.0, 1.0))
    spec = Preprocess(target_shape=(32, 32, 32), spacing_mm=(2.0, 1.25, 1.25), resize="crop_or_pad")
    grid = model_grid(study, spec)
    mask = np.zeros(study.array.shape, np.float32)
    mask[10:16, 15:25, 8:20] = 1.0
    on_model = grid.to_model(mask)
    assert abs(on_model.sum() * 2.0 * 1.25 * 1.25 - mask.sum() * 2.0) < 0.05 * mask.sum() * 2.0  # same mm^3
    back = grid.to_study(on_model) >= 0.5
    inside, outside = (back & (mask > 0)).sum(), (back & (mask == 0)).sum()
    assert inside / (mask > 0).sum() > 0.8 and outside < 0.2 * mask.sum()


# -- the DICOM SR, with the real tumour boxes of the shared chest CT ----------------------------------------
def _tumour_box_lps(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """The annotated adenocarcinoma's box in LPS mm from its PASCAL-VOC files and the DICOM headers alone
    (9 of the 20 files name an instance of this series; the others belong to a series not shipped)."""
    import xml.etree.ElementTree as ET

    import pydicom

    by_uid = {}
    for path in (shared_data / "ct" / "lung_dx_a0001_chest_kernelB").glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_uid[ds.SOPInstanceUID] = ds
    corners = []
    files = [x for x in (shared_data / "ct" / "lung_dx_a0001_tumour_boxes").glob("*.xml") if x.stem in by_uid]
    assert len(files) == 9
    for xml in files:
        ds, box = by_uid[xml.stem], ET.parse(xml).find("object/bndbox")
        row_dir, col_dir = (np.asarray(ds.ImageOrientationPatient[i:i + 3], float) for i in (0, 3))
        spacing_row, spacing_col = (float(v) for v in ds.PixelSpacing)
        for x in (float(box.find("xmin").text), float(box.find("xmax").text)):
            for y in (float(box.find("ymin").text), float(box.find("ymax").text)):
                corners.append(np.asarray(ds.ImagePositionPatient, float) + x * spacing_col * row_dir
                               + y * spacing_row * col_dir)
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def test_the_sr_carries_each_location_as_scoord3d_in_the_source_frame(shared_data, chest_study, tmp_path):
    import pydicom

    from napari_radreport.export import ReportRecord, StudyReference, export_report
    from napari_radreport.grounding.geometry import StudyGrid

    low, high = _tumour_box_lps(shared_data)
    centre = (low + high) / 2
    grid = StudyGrid.of(chest_study)  # our reader's geometry puts the tumour's centre inside the tumour's box
    voxel = grid.voxel_of(centre)
    assert voxel is not None
    assert np.all(grid.to_lps(voxel) >= low - 3) and np.all(grid.to_lps(voxel) <= high + 3)
    sentence = "A large nodule in the left lower lobe."
    location = {"method": "test", "peak_lps_mm": [round(v, 2) for v in centre],
                "box_lps_mm": [[round(v, 2) for v in low], [round(v, 2) for v in high]]}
    text = f"Findings:\n{sentence} No pleural effusion.\n\nImpression:\nLeft lower lobe mass."
    record = ReportRecord(final_text=text, ai_draft=text, study=StudyReference.from_study(chest_study),
                          grounding=[{"section": "findings", "text": sentence, "finding": "nodule",
                                      "location": location}])
    ds = pydicom.dcmread(export_report(record, tmp_path / "report.dcm"))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    frame = pydicom.dcmread(next((shared_data / "ct" / "lung_dx_a0001_chest_kernelB").glob("*.dcm")),
                            stop_before_pixels=True).FrameOfReferenceUID
    findings = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Findings")
    (located,) = [i for i in findings.ContentSequence if i.ValueType == "TEXT" and i.TextValue == sentence]
    coordinates = {i.GraphicType: np.asarray(i.GraphicData, float).reshape(-1, 3)
                   for i in located.ContentSequence}
    assert all(i.ValueType == "SCOORD3D" and i.ReferencedFrameOfReferenceUID == frame
               and i.RelationshipType == "INFERRED FROM" for i in located.ContentSequence)
    np.testing.assert_allclose(coordinates["POINT"][0], location["peak_lps_mm"], atol=1e-3)
    np.testing.assert_allclose(coordinates["MULTIPOINT"], location["box_lps_mm"], atol=1e-3)
    no_location = ReportRecord(final_text=text, ai_draft=text, study=StudyReference.from_study(chest_study))
    plain = pydicom.dcmread(export_report(no_location, tmp_path / "plain.dcm"))
    assert plain.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # no locations: Comprehensive SR as before


def test_report_ground_on_a_scan_out_of_the_models_scope_says_the_locations_are_meaningless(
        chest_series, capsys):
    from napari_radreport.cli import main
    from napari_radreport.engine import default_model

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    args = ["report", str(chest_series), "--ground", "--max-new-tokens", "24"]
    assert main(args) == 1  # refused
    assert main([*args, "--allow-out-of-scope"]) == 0
    printed = capsys.readouterr().err
    assert "outside the model's scope: these locations are as meaningless as the draft" in printed
