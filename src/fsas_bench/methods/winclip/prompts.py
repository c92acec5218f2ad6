"""WinCLIP's compositional prompt ensemble: state words × templates per class name (baselines.md §1.2)."""

from __future__ import annotations

NORMAL_STATES = (
    "{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage",
)  # fmt: skip
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")

TEMPLATES = {
    # WinCLIP's published 22 templates (each phrase once with "a" and once with "the"), InCTRL's order.
    "winclip22": (
        "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
        "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
        "a dark photo of a {}.", "a dark photo of the {}.", "a jpeg corrupted photo of a {}.",
        "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
        "a photo of the {}.", "a photo of a {}.", "a photo of a small {}.", "a photo of the small {}.",
        "a photo of a large {}.", "a photo of the large {}.", "a photo of a {} for visual inspection.",
        "a photo of the {} for visual inspection.", "a photo of a {} for anomaly detection.",
        "a photo of the {} for anomaly detection.",
    ),
    # anomalib's 21-template list (one "jpeg corrupted" template duplicated, one "cropped" missing), in its order.
    "anomalib21": (
        "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
        "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
        "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
        "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
        "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
        "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
        "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
    ),
}  # fmt: skip


def prompt_ensemble(class_name: str, templates: str = "winclip22") -> tuple[list[str], list[str]]:
    """Normal and anomalous sentences for ``class_name``: every state × every template.

    Returns:
        ``(normal, anomalous)`` lists of 7·T and 4·T sentences.
    """
    chosen = TEMPLATES[templates]
    normal = [t.format(s.format(class_name)) for s in NORMAL_STATES for t in chosen]
    anomalous = [t.format(s.format(class_name)) for s in ANOMALOUS_STATES for t in chosen]
    return normal, anomalous
