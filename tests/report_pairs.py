"""Report-like (prediction, reference) pairs for the metric tests: case, punctuation, numbers, repeats, an
empty prediction, a reference shorter than its prediction. Written for these tests."""

PAIRS = [
    ("No pleural effusion. The heart is enlarged.",
     "There is no pleural effusion. Cardiomegaly: the heart is big."),
    ("A 12 mm nodule in the right upper lobe, unchanged.",
     "Stable 1.2 cm nodule in the right upper lobe (series 3, image 45)."),
    ("Lungs are clear. No pneumothorax.", "The lungs are clear. No pneumothorax or pleural effusion."),
    ("Consolidation in the left lower lobe, consistent with pneumonia.",
     "Left lower lobe consolidation, likely pneumonia. Small left effusion."),
    ("", "Mild emphysema in both upper lobes."),
    ("Normal chest CT. Normal chest CT. Normal chest CT.", "Normal chest CT."),
    ("Moderate pericardial effusion; heart size is normal.",
     "Moderate pericardial effusion. Heart size normal."),
    ("Bibasilar atelectasis. Degenerative changes of the thoracic spine.",
     "Bibasilar atelectasis and degenerative changes of the spine. No acute fracture."),
]
PREDICTIONS = [p for p, _ in PAIRS]
REFERENCES = [r for _, r in PAIRS]
