"""Published numbers: the committed CSVs validate, broken copies fail with one clear line, and leaderboards
compare with a paper only when the run's protocol matches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from fsas_bench.errors import UserError
from fsas_bench.runner.leaderboard import write_leaderboards
from fsas_bench.runner.published import PUBLISHED_COLUMNS, PUBLISHED_DIR, load_published
from fsas_bench.runner.results import RESULT_COLUMNS, ResultStore


def test_committed_published_csvs_validate():
    frame = load_published(PUBLISHED_DIR)
    assert len(frame) > 200 and set(frame["evidence"]) == {"verified", "needs-check"}
    assert (frame.loc[frame["table"].str.contains("from memory"), "evidence"] == "needs-check").all()
    rows = frame.set_index(["paper", "method", "dataset", "shot", "metric"]).sort_index()
    fga = rows.loc[("FineGrainedAD (Pattern Recognition 2026)", "finegrainedad", "mvtec", 1, "I-AUROC")]
    assert fga["value"] == 91.04 and fga["evidence"] == "verified" and fga["arxiv"] == "2510.26464"
    winclip = rows.loc[("WinCLIP (CVPR 2023)", "winclip", "mvtec")]
    assert winclip.loc[(2, "P-AUROC"), "evidence"] == "needs-check"  # [M] in the league table
    assert winclip.loc[(1, "P-AUROC"), "evidence"] == "verified" and winclip.loc[(4, "AUPRO"), "value"] == 89.0
    inctrl = rows.loc[("InCTRL (CVPR 2024)", "inctrl")]
    assert inctrl.loc[("mvtec", 2, "I-AUROC"), "evidence"] == "needs-check"  # second-hand transcription
    assert inctrl.loc[("mvtec", 8, "I-AUROC"), "evidence"] == "verified"
    assert not ((frame["method"] == "dictas").any())  # not transcribed yet: never filled from memory


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(PUBLISHED_DIR, tmp_path / "published"))


def _set(directory: Path, file: str, row: int, column: str, value: str) -> None:
    path = directory / file
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False, lineterminator="\n")


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("value", "abc", "column 'value': 'abc' is invalid: write the number as printed, in %"),
        ("value", "150", "column 'value': '150' is invalid"),
        ("evidence", "V", "column 'evidence': 'V' is invalid: use verified or needs-check"),
        ("metric", "PRO", "column 'metric': 'PRO' is invalid: use one of I-AUROC"),
        ("shot", "one", "column 'shot'"),
        ("arxiv", "arXiv:2303", "column 'arxiv'"),
        ("method", "WinCLIP+", "column 'method'"),
        ("backbone", "", "column 'backbone': is empty"),
        ("backbone", "fsas-tiny", "column 'backbone'"),
        ("pretrained", "none (random weights)", "column 'pretrained'"),
        ("resolution", "240px", "column 'resolution'"),
        ("table", "from memory (conventions.md §9)", "a from-memory number stays needs-check"),
    ],
)
def test_broken_rows_name_file_row_column_and_fix(tmp_path, column, value, needle):
    directory = _copy(tmp_path)
    _set(directory, "winclip.csv", 2, column, value)
    with pytest.raises(UserError) as err:
        load_published(directory)
    message = str(err.value)
    assert message.startswith(f"{directory / 'winclip.csv'} row 4 column") and needle in message
    assert "\n" not in message


def test_broken_files_fail_clearly(tmp_path):
    directory = _copy(tmp_path)
    frame = pd.read_csv(directory / "musc.csv", dtype=str)
    frame.drop(columns=["evidence"]).to_csv(directory / "musc.csv", index=False)
    with pytest.raises(UserError, match=r"musc\.csv: header lacks column 'evidence': use exactly paper,arxiv"):
        load_published(directory)
    for broken in (b'paper,arxiv\n"unclosed,1\n', b"\xff\xfe\x00garbage"):
        (directory / "musc.csv").write_bytes(broken)
        with pytest.raises(UserError, match="musc.csv: not a readable CSV .*: fix the quoting or the encoding"):
            load_published(directory)
    (directory / "musc.csv").unlink()
    shutil.copy(directory / "regad.csv", directory / "regad_copy.csv")
    with pytest.raises(UserError, match=r"regad\.csv row 2 and regad_copy\.csv row 2 both give RegAD"):
        load_published(directory)
    with pytest.raises(UserError, match="no published CSV in"):
        load_published(tmp_path)


def _results(out: Path, *, backbone: str, pretrained: str, values: dict[int, float]) -> Path:
    """A results.csv of winclip on mvtec, 1-shot, two categories, one I-AUROC value per seed."""
    store = ResultStore(out)
    for seed, value in values.items():
        for category in ("bottle", "cable"):
            row = dict.fromkeys(RESULT_COLUMNS, "")
            row.update(method="winclip", mode="benchmark", method_cfg_hash="h", backbone=backbone,
                       pretrained=pretrained, eval_size="native", metric_impl="exact", dataset="mvtec",
                       category=category, shot=1, seed=seed, level="image", metric="I-AUROC", value=value,
                       status="ok", fit_scope="none", shot_manifest="seeded@v1", transductive=False,
                       job_id=f"{seed}{category}")  # fmt: skip
            store.write_cell(f"{seed}{category}", [row], {"job_id": f"{seed}{category}"})
    store.merge()
    return out


@pytest.mark.parametrize("pretrained", ["laion400m_e32", "vit_b_16_plus_240-laion400m_e32-699c4b84.pt"])
def test_leaderboard_compares_with_papers_of_the_same_protocol(tmp_path, pretrained):
    out = _results(tmp_path, backbone="ViT-B-16-plus-240", pretrained=pretrained, values={0: 0.92, 1: 0.94})
    text = write_leaderboards(out)[0].read_text()
    assert "### Published numbers (paper comparison)" in text
    section = text.split("### Published numbers")[1].split("###")[0]
    assert "| winclip (1-shot) | I-AUROC | 93.0 ± 1.4 | 93.1 | -0.1 | WinCLIP (CVPR 2023), arXiv 2303.14814" in section
    assert "| 93.7 | -0.7 | Accurate-WinCLIP-pytorch" in section  # every matching source is listed
    assert "| 93.7 | -0.7 | FineGrainedAD" in section
    assert "P-AUROC" not in section and "patchcore" not in section and "2-shot" not in section
    assert "**93.1**" not in text  # paper values are never bolded


@pytest.mark.parametrize(
    ("backbone", "pretrained"),
    [
        ("ViT-B-16-plus-240", "none (random weights)"),
        ("fsas-tiny", "laion400m_e32"),
        ("ViT-B-16-plus-240", "laion2b_s34b_b88k"),
    ],
)
def test_leaderboard_never_compares_other_protocols(tmp_path, backbone, pretrained):
    out = _results(tmp_path, backbone=backbone, pretrained=pretrained, values={0: 0.92})
    text = write_leaderboards(out)[0].read_text()
    assert "## mvtec" in text and "Published numbers" not in text and "93.1" not in text


def test_published_columns_are_the_documented_ones():
    header = (PUBLISHED_DIR / "winclip.csv").read_text().splitlines()[0]
    assert header == ",".join(PUBLISHED_COLUMNS)
