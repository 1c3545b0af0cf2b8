"""The region splitter: sentences of CT reports sorted into chest, abdomen and pelvis by
the organs they name."""

from __future__ import annotations

import pytest

from napari_radreport.data.regions import (
    UNASSIGNED,
    assign_regions,
    regions_named,
    split_by_region,
    split_sentences,
)


def test_regions_come_in_the_engines_order():
    from napari_radreport.engine.prompts import REGIONS

    report = "The urinary bladder is distended. The liver is enlarged. The lungs are clear."
    assert tuple(split_by_region(report)) == REGIONS


def test_a_three_region_report_is_sorted_by_organ():
    report = ("The lungs are clear. There is a small right pleural effusion. The liver is enlarged. "
              "The pancreas is atrophic. The urinary bladder is distended. The prostate measures 5 cm.")
    assert split_by_region(report) == {
        "chest": "The lungs are clear. There is a small right pleural effusion.",
        "abdomen": "The liver is enlarged. The pancreas is atrophic.",
        "pelvis": "The urinary bladder is distended. The prostate measures 5 cm.",
    }


@pytest.mark.parametrize("sentence, regions", [
    ("Scattered pulmonary micronodules.", ("chest",)),
    ("No pleural thickening.", ("chest",)),
    ("Mild cardiac enlargement.", ("chest",)),
    ("Small pericardial effusion.", ("chest",)),
    ("Peribronchial thickening in both bases.", ("chest",)),
    ("Hepatic steatosis.", ("abdomen",)),
    ("Both kidneys show cortical cysts.", ("abdomen",)),
    ("Mild right hydronephrosis.", ("abdomen",)),
    ("Splenic granulomas are noted.", ("abdomen",)),
    ("Bilateral adrenal glands are normal.", ("abdomen",)),
    ("Status post cholecystectomy.", ("abdomen",)),
    ("The vesical wall is thickened.", ("pelvis",)),
    ("Both ovaries are unremarkable.", ("pelvis",)),
    ("The seminal vesicles are symmetric.", ("pelvis",)),
    ("Small pelvic free fluid.", ("pelvis",)),
    ("Degenerative changes of both hips.", ("pelvis",)),
])
def test_organs_are_found_in_their_plural_and_adjective_forms(sentence, regions):
    assert regions_named(sentence) == regions


@pytest.mark.parametrize("sentence, regions", [
    ("Dilatation of the renal pelvis.", ("abdomen",)),          # not pelvis
    ("Calcified plaques in the thoracic aorta.", ("chest",)),
    ("The abdominal aorta measures 2.1 cm.", ("abdomen",)),
    ("Small bowel loops are not dilated.", ("abdomen",)),
    ("The gall bladder contains stones.", ("abdomen",)),         # not the bladder
    ("The gallbladder is contracted.", ("abdomen",)),
    ("Thickening at the gastric cardia.", ("abdomen",)),          # "cardia" is not cardiac
    ("Small pneumoperitoneum.", ("abdomen",)),                   # not "pneumo..." of the lung
    ("Diverticula in the sigmoid colon.", ("pelvis",)),
    ("The ascending colon is collapsed.", ("abdomen",)),
])
def test_phrases_and_exceptions_win_over_their_words(sentence, regions):
    assert regions_named(sentence) == regions


@pytest.mark.parametrize("sentence", [
    "The aorta is normal in calibre.",
    "No enlarged lymph nodes.",
    "The colon contains stool.",
    "Degenerative changes of the spine.",
    "No lytic or blastic bone lesion.",
    "Examination performed without contrast.",
])
def test_structures_spanning_regions_name_no_region(sentence):
    assert regions_named(sentence) == ()


def test_sentences_are_not_cut_at_decimals_or_abbreviations():
    text = ("A 3.5 cm mass is seen in the liver, approx. 2 cm from the dome. "
            "Dr. Smith was informed on 12.03.2024. "
            "Small nodules (e.g. in segment 6) are stable, i.e. benign. "
            "Density vs. prior study is unchanged")
    assert split_sentences(text) == [
        "A 3.5 cm mass is seen in the liver, approx. 2 cm from the dome.",
        "Dr. Smith was informed on 12.03.2024.",
        "Small nodules (e.g. in segment 6) are stable, i.e. benign.",
        "Density vs. prior study is unchanged",
    ]


def test_sentences_end_at_line_breaks_and_lose_their_list_numbers():
    text = "1. Pleural effusion on the left\n2) Hepatomegaly. 3. Renal cyst!\n- Bladder diverticulum?"
    assert split_sentences(text) == ["Pleural effusion on the left", "Hepatomegaly.", "Renal cyst!",
                                     "Bladder diverticulum?"]


def test_a_sentence_naming_two_regions_goes_to_both():
    report = "The liver is normal and there is no pleural effusion."
    assert split_by_region(report) == {"chest": report, "abdomen": report}


def test_a_sentence_naming_no_organ_follows_the_previous_one():
    report = ("The lungs are clear. No nodule is seen. The spleen is enlarged. It measures 15.2 cm. "
              "The aorta is normal in calibre. The urinary bladder is empty. No free fluid.")
    assert split_by_region(report) == {
        "chest": "The lungs are clear. No nodule is seen.",
        "abdomen": "The spleen is enlarged. It measures 15.2 cm. The aorta is normal in calibre.",
        "pelvis": "The urinary bladder is empty. No free fluid.",
    }
    assert [a.named for a in assign_regions(report)] == [True, False, True, False, False, True, False]


def test_a_carried_sentence_follows_both_regions_of_a_two_region_sentence():
    report = "Liver and lung metastases. Both are unchanged."
    assert split_by_region(report) == {"chest": report, "abdomen": report}


def test_leading_sentences_without_organs_are_dropped_or_kept_unassigned():
    report = "Comparison: none. Technique: helical CT. The lungs are clear."
    assert split_by_region(report) == {"chest": "The lungs are clear."}
    assert split_by_region(report, keep_unassigned=True) == {
        "chest": "The lungs are clear.", UNASSIGNED: "Comparison: none. Technique: helical CT."}


def test_headings_set_the_region_and_section_headings_reset_it():
    report = "FINDINGS:\nNo acute change.\nABDOMEN:\nUnremarkable. No free air.\nLungs and pleura:\nClear."
    assert split_by_region(report, keep_unassigned=True) == {
        "chest": "Lungs and pleura: Clear.",
        "abdomen": "ABDOMEN: Unremarkable. No free air.",
        UNASSIGNED: "No acute change.",
    }
    # a section heading without a region ends the previous region's context
    assert split_by_region("The liver is normal.\nIMPRESSION:\nNo acute finding.", keep_unassigned=True) == {
        "abdomen": "The liver is normal.", UNASSIGNED: "No acute finding."}


def test_negated_findings_still_go_to_the_organ_they_name():
    assert split_by_region("No pulmonary embolism. No hydronephrosis. No inguinal hernia.") == {
        "chest": "No pulmonary embolism.", "abdomen": "No hydronephrosis.", "pelvis": "No inguinal hernia."}


@pytest.mark.parametrize("text", ["", "   \n  ", "No significant change."])
def test_text_without_organs_gives_no_regions(text):
    assert split_by_region(text) == {}
