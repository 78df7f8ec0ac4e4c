"""Publish the respiratory knowledge base as a model: validated, stored with its SHA-256, pinned
by tag like any trained model, and mirrored into the platform's database.

    medserve triage load-kb [FILE]        (also `medserve train respiratory_triage`)

Nothing is fitted: the KB is written and reviewed by people. What "training" adds is what every
served model carries: a card (the KB's version, review status, cited sources, and both
strategies measured on simulated patients) and a drift reference for the service's final
answers (the diagnosis mix against the KB's priors, the top score of simulated consults).
Publishing the same file twice returns the tag already stored.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import NotFound
from pydantic import BaseModel

from medserve import model_store
from medserve.database.engine import make_engine
from medserve.database.schema import check_schema
from medserve.drift import BinnedReference, ReferenceProfile, bin_numeric
from medserve.respiratory.kb import KnowledgeBase, load_kb
from medserve.respiratory.kb_tables import store_kb
from medserve.respiratory.settings import TriageSettings, get_triage_settings
from medserve.respiratory.simulation import draw_patient, final_result
from medserve.settings import Settings
from training.progress import ProgressCallback, Reporter

MODEL_NAME = "respiratory_triage"
KB_FILE = "respiratory-kb.yaml"
SIMULATED_PATIENTS = 300  # enough for stable reference bins; seconds to simulate
SIMULATION_SEED = 20


class PublishedKb(BaseModel):
    tag: str
    metrics: dict[str, float]
    created: bool  # False: this exact file was already in the store
    tables_written: bool


def stored_tag(kb: KnowledgeBase) -> str | None:
    """The tag of a stored model holding exactly this KB file, if any."""
    try:
        stored = bentoml.models.list(MODEL_NAME)
    except NotFound:  # no version stored at all
        return None
    for model in stored:
        if model.info.metadata.get("kb_sha256") == kb.sha256:
            return str(model.tag)
    return None


def diagnosis_reference(
    kb: KnowledgeBase, settings: TriageSettings
) -> tuple[ReferenceProfile, dict[str, float]]:
    """The drift reference of final answers and both strategies' figures on simulated patients.

    The diagnosis mix is compared with the KB's priors (what the KB expects to see); the score
    and the confident share with what simulated consults of the default strategy ended with.
    """
    rng = np.random.default_rng(SIMULATION_SEED)
    patients = [draw_patient(kb, rng) for _ in range(SIMULATED_PATIENTS)]
    metrics: dict[str, float] = {}
    top_scores: list[float] = []
    for strategy in ("source", "info_gain"):
        top1 = questions = 0
        for patient in patients:
            result, asked = final_result(patient, strategy, settings, kb)
            ranked = [d.disease for d in result.diagnoses]  # the source's cycle may exclude all
            top1 += ranked[:1] == [patient.disease]
            questions += asked
            if strategy == settings.default_strategy and result.diagnoses:
                top_scores.append(result.diagnoses[0].score)
        metrics[f"simulated_top1_{strategy}"] = top1 / len(patients)
        metrics[f"simulated_questions_{strategy}"] = questions / len(patients)
    reading = settings.reading()
    prior = np.array([reading[d.prior] for d in kb.diseases])
    mix = BinnedReference(
        name="diagnosis",
        kind="categorical",
        categories=[float(i) for i in range(len(kb.diseases))],
        expected=[*(prior / prior.sum()).tolist(), 0.0],
    )
    scores = np.asarray(top_scores)
    reference = ReferenceProfile(
        features=[mix],
        score=bin_numeric("top_score", scores),
        positive_rate=float(np.mean(scores >= settings.stop_probability)),
        n_rows=len(patients),
    )
    return reference, metrics


def _card(kb: KnowledgeBase, metrics: dict[str, float]) -> dict:
    return {
        "model": MODEL_NAME,
        "kind": "knowledge base (expert system), not a fitted model",
        "kb_version": kb.version,
        "kb_sha256": kb.sha256,
        "review_status": kb.review_status,
        "diseases": [
            {"id": d.id, "title": d.title, "icd10": d.icd10, "prior": d.prior, "source": d.source}
            for d in kb.diseases
        ],
        "symptoms": len(kb.symptoms),
        "factors": [f.id for f in kb.factors],
        "separated_only_by_factors": [list(pair) for pair in kb.symptom_twins],
        "simulated_patients": {
            "count": SIMULATED_PATIENTS,
            "seed": SIMULATION_SEED,
            "note": "drawn from the KB itself: measures how each strategy uses the KB, "
            "not clinical accuracy",
            **metrics,
        },
    }


def publish(
    path: Path, settings: Settings, progress: ProgressCallback | None = None
) -> PublishedKb:
    """Store the KB at `path` (unless this exact file is stored) and mirror it into the
    database, which must be at the current schema (`medserve db upgrade`)."""
    report = Reporter(MODEL_NAME, progress)
    report("validating the knowledge base")
    kb = load_kb(path)
    triage_settings = get_triage_settings()
    tag = stored_tag(kb)
    created = tag is None
    metrics: dict[str, float] = {}
    if tag is None:
        report("simulated consults for the drift reference", total=SIMULATED_PATIENTS)
        reference, metrics = diagnosis_reference(kb, triage_settings)
        metadata = {"kb_version": kb.version, "kb_sha256": kb.sha256, "metrics": metrics}
        with model_store.create_model(MODEL_NAME, metadata, _card(kb, metrics), reference) as model:
            shutil.copyfile(path, Path(model.path) / KB_FILE)
        tag = str(model.tag)
    else:
        metrics = dict(bentoml.models.get(tag).info.metadata.get("metrics", {}))
    report("database tables")
    engine = make_engine(settings.resolved_database_url)
    try:
        check_schema(engine)
        written = store_kb(engine, kb, tag)
    finally:
        engine.dispose()
    return PublishedKb(tag=tag, metrics=metrics, created=created, tables_written=written)
