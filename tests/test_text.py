"""The methods' text toolkit against hand-written references: sentences, class names, prototypes (2 × D), the
two-way probability, and each method's use of it (DictAS's D × 2 layout, InCTRL's and WinCLIP's scores)."""

from __future__ import annotations

import math

import pytest
import torch

from fsas_bench.methods.dictas.torch_model import text_probability
from fsas_bench.methods.inctrl.lightning_module import prompt_sentences
from fsas_bench.methods.inctrl.torch_model import text_score
from fsas_bench.methods.text import (
    ANOMALOUS_STATES, CLIP_LOGIT_SCALE, DICTAS_ABNORMAL_STATES, DICTAS_TEMPLATES, NORMAL_STATES, WINCLIP_TEMPLATES, anomaly_probability, class_name, sentences,
    text_prototypes,
)  # fmt: skip


def test_state_words_are_the_published_lists() -> None:
    assert len(NORMAL_STATES) == 7 and NORMAL_STATES[0] == "{}" and "{} without defect" in NORMAL_STATES
    assert ANOMALOUS_STATES == ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
    assert len(DICTAS_TEMPLATES) == 35 and DICTAS_ABNORMAL_STATES == ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
    assert len(WINCLIP_TEMPLATES["winclip22"]) == 22 and len(WINCLIP_TEMPLATES["anomalib21"]) == 21


def test_class_name_rule() -> None:
    assert class_name("metal_nut") == "metal nut"
    assert class_name("metal_nut", (("metal_nut", "nut"), ("pcb1", "board"))) == "nut"
    assert class_name("hex_nut", (("metal_nut", "nut"),)) == "hex nut"


def test_sentences_are_state_major() -> None:
    got = sentences("cup", ("{}", "broken {}"), ("a {}.", "the {}!"))
    assert got == ["a cup.", "the cup!", "a broken cup.", "the broken cup!"]


def test_prototypes_are_two_by_d_unit_means() -> None:
    gen = torch.Generator().manual_seed(0)
    normal, anomalous = torch.randn(5, 8, generator=gen), torch.randn(3, 8, generator=gen)
    protos = text_prototypes(normal, anomalous)
    assert protos.shape == (2, 8)
    for row, group in zip(protos, (normal, anomalous), strict=True):
        units = [v / math.sqrt(float((v * v).sum())) for v in group]
        mean = sum(units) / len(units)
        torch.testing.assert_close(row, mean / math.sqrt(float((mean * mean).sum())), rtol=0, atol=1e-6)
    raw = text_prototypes(normal, anomalous, normalise=False)
    torch.testing.assert_close(raw, torch.stack([normal.sum(0) / 5, anomalous.sum(0) / 3]), rtol=0, atol=1e-6)


def test_anomaly_probability_is_the_two_way_softmax() -> None:
    sims = torch.tensor([[0.20, 0.25], [0.3, 0.1], [0.0, 0.0]])
    expected = [math.exp(100 * a) / (math.exp(100 * n) + math.exp(100 * a)) for n, a in sims.tolist()]
    torch.testing.assert_close(anomaly_probability(sims, CLIP_LOGIT_SCALE), torch.tensor(expected), rtol=1e-6, atol=0)
    assert anomaly_probability(torch.tensor([0.1, 0.1]), 7.0).item() == pytest.approx(0.5)
    assert CLIP_LOGIT_SCALE == 100.0


def test_methods_score_text_through_the_toolkit() -> None:
    gen = torch.Generator().manual_seed(1)
    protos = text_prototypes(torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen))
    embeddings = torch.randn(3, 6, generator=gen)
    units = embeddings / embeddings.norm(dim=-1, keepdim=True)
    reference = torch.softmax(100 * units @ protos.T, dim=-1)[:, 1]
    torch.testing.assert_close(text_score(embeddings, protos[None]), reference, rtol=0, atol=1e-6)  # InCTRL, 2 × D
    torch.testing.assert_close(text_probability(embeddings, protos.T.contiguous()), reference, rtol=0, atol=1e-6)


def test_inctrl_sentences_are_winclip22_or_the_cifar_pair() -> None:
    normal, anomalous = prompt_sentences("hex nut")
    templates = WINCLIP_TEMPLATES["winclip22"]
    assert normal[:2] == [templates[0].format("hex nut"), templates[1].format("hex nut")]
    assert len(normal) == 7 * 22 and anomalous[-1] == templates[-1].format("hex nut with damage")
    assert prompt_sentences("cat") == (["a photo of cat for anomaly detection."],
                                       ["a photo without cat for anomaly detection."])  # fmt: skip
