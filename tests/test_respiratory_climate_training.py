"""Training the climate-occurrence rules: the model store contract, the real-file path, and the
Ray job entrypoint end to end on the session's Ray head."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bentoml
import pytest

from medserve import model_store
from medserve.respiratory.climate.inmet import write_inmet
from medserve.respiratory.climate.rules import ClimateRules
from medserve.respiratory.climate.settings import ClimateRulesSettings
from medserve.respiratory.climate.sources import category
from medserve.respiratory.climate.synthetic import generate
from medserve.respiratory.climate.tabnet import write_tabnet
from medserve.respiratory.kb import get_kb
from tests.conftest import RayHead, run_train_job
from training.respiratory_rules import RulesTrainResult, train


@pytest.fixture(scope="module")
def trained() -> RulesTrainResult:
    return train(ClimateRulesSettings())


def test_the_store_holds_rules_card_and_reference(trained: RulesTrainResult) -> None:
    meta = bentoml.models.get(trained.tag).info.metadata
    assert meta["data_source"] == "synthetic" and len(meta["training_data_sha256"]) == 64
    assert meta["kb_sha256"] == get_kb().sha256
    card = model_store.load_card(trained.tag)
    rules = ClimateRules.load(trained.tag)
    assert card["rules"] == json.loads(rules.model_dump_json())
    assert card["missing"] == [] and "DecisionTreeClassifier" in card["comparison"]
    assert rules.data_sha256 == meta["training_data_sha256"]
    j11 = rules.rules_for("J11.1")
    assert j11 is not None and len(j11.folds) == 10
    assert {"rules_error", "tree_error", "majority_error"} <= set(
        card["rules"]["icds"]["J11.1"]["folds"][0]
    )
    reference = model_store.load_reference(trained.tag)
    assert [f.name for f in reference.features] == ["temperature_c", "temperature_class"]
    assert reference.n_rows == 60 and 0 < reference.positive_rate < 0.5  # cold months are few
    assert ClimateRules.from_folder(model_store.model_folder(trained.tag)) == rules


def test_the_report_is_a_markdown_table_per_icd(trained: RulesTrainResult) -> None:
    lines = trained.report.splitlines()
    assert "synthetic data, 60 months, 10 folds" in lines[0]
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + 15 + 1  # header, one row per KB code, the mean
    assert 0 <= trained.metrics["rules_error_mean"] <= 1 and trained.metrics["icd_codes"] == 15


def test_real_files_give_the_same_rules_as_the_data_they_hold(
    trained: RulesTrainResult, tmp_path: Path
) -> None:
    """The synthetic series written as TabNet + INMET exports and trained through the file
    path: same data hash and rules, but `data_source: datasus+inmet` and the files' hashes."""
    config = ClimateRulesSettings()
    counts, temps = generate(sorted({category(d.icd10) for d in get_kb().diseases}), config)
    write_tabnet(counts, tmp_path / "sp.csv", {})
    write_inmet(temps, tmp_path / "83781.csv")
    from_files = train(
        ClimateRulesSettings(
            occurrences_csv=tmp_path / "sp.csv", temperatures_csv=tmp_path / "83781.csv"
        )
    )
    files, synthetic = ClimateRules.load(from_files.tag), ClimateRules.load(trained.tag)
    assert files.data_source == "datasus+inmet"
    assert files.icds == synthetic.icds and files.data_sha256 == synthetic.data_sha256
    hashes = bentoml.models.get(from_files.tag).info.metadata["source_files_sha256"]
    assert set(hashes) == {"sp.csv", "83781.csv"}


def test_a_bad_file_fails_the_training_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "sp.csv").write_text('"Categoria CID-10";"2019/Jan"\n"J11 Influenza";"x"\n')
    (tmp_path / "t.csv").write_text("Data Medicao;TEMPERATURA MEDIA(°C);\n2019-01-31;25;\n")
    with pytest.raises(ValueError, match=r"sp.csv line 2: 'x' is not a case count"):
        train(
            ClimateRulesSettings(
                occurrences_csv=tmp_path / "sp.csv", temperatures_csv=tmp_path / "t.csv"
            )
        )


def test_ray_job_entrypoint_trains_the_rules(ray_head: RayHead) -> None:
    result, outcome = run_train_job("respiratory_rules", dict(os.environ, **ray_head.env()))
    assert outcome["model"] == "respiratory_rules"
    assert "| J11.1 |" in result.stdout  # the per-ICD table is printed
    rules = ClimateRules.load(outcome["tag"])  # the task saved to this session's store
    assert rules.data_source == "synthetic" and set(rules.icds) == {
        d.icd10 for d in get_kb().diseases
    }
