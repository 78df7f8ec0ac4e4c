"""Which training function trains which model; the one table `ray_jobs.train` dispatches on."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from medserve.prediction_log import PredictionLog
from medserve.settings import Settings
from training.progress import ProgressCallback


class TrainOutcome(BaseModel):
    """What any training run reports back (also the job's final JSON line)."""

    model: str
    tag: str
    metrics: dict
    exported_to: str | None = None
    report: str | None = Field(
        default=None, description="A human-readable summary (the CT architecture comparison)."
    )


def _train_heart_risk(
    settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
) -> TrainOutcome:
    from training.heart_risk import HeartTrainConfig, feedback_frame, train

    feedback = None
    if with_feedback:
        log = PredictionLog(settings.resolved_database_url)
        feedback = feedback_frame(log.labelled("heart_risk"))
    result = train(HeartTrainConfig(), feedback, progress)
    return TrainOutcome(model="heart_risk", tag=result.tag, metrics=result.metrics)


def _train_ecg_anomaly(
    settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
) -> TrainOutcome:
    from training.ecg_anomaly import EcgTrainConfig, train

    config = EcgTrainConfig()
    feedback = []
    if with_feedback:
        log = PredictionLog(settings.resolved_database_url)
        feedback = log.labelled("ecg_anomaly", config.feedback_since, config.feedback_until)
    result = train(config, feedback, progress)
    return TrainOutcome(model="ecg_anomaly", tag=result.tag, metrics=result.metrics)


def _train_ct_pattern(
    settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
) -> TrainOutcome:
    from training.ct_pattern import CtTrainConfig, train

    if with_feedback:
        raise ValueError("ct_pattern has no review loop yet: there is no feedback to add")
    result = train(CtTrainConfig(), progress)
    return TrainOutcome(
        model="ct_pattern", tag=result.tag, metrics=result.metrics, report=result.report
    )


def _publish_respiratory_kb(
    settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
) -> TrainOutcome:
    from medserve.respiratory.settings import get_triage_settings
    from training.respiratory_triage import publish

    if with_feedback:
        raise ValueError(
            "respiratory_triage is a reviewed knowledge base: confirmed consults feed "
            "`medserve triage report`, not a retraining"
        )
    published = publish(get_triage_settings().kb_path, settings, progress)
    return TrainOutcome(model="respiratory_triage", tag=published.tag, metrics=published.metrics)


def _train_respiratory_rules(
    settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
) -> TrainOutcome:
    from training.respiratory_rules import train

    if with_feedback:
        raise ValueError("respiratory_rules learns from DATASUS/INMET series, not from feedback")
    result = train(progress=progress)
    return TrainOutcome(
        model="respiratory_rules", tag=result.tag, metrics=result.metrics, report=result.report
    )


class Trainer(Protocol):
    """Trains one model: settings, whether to add review-loop feedback, optional progress."""

    def __call__(
        self, settings: Settings, with_feedback: bool, progress: ProgressCallback | None = None
    ) -> TrainOutcome: ...


TRAINERS: dict[str, Trainer] = {
    "heart_risk": _train_heart_risk,
    "ecg_anomaly": _train_ecg_anomaly,
    "ct_pattern": _train_ct_pattern,
    "respiratory_triage": _publish_respiratory_kb,
    "respiratory_rules": _train_respiratory_rules,
}
