"""The platform's model store: BentoML's local store plus export/import to S3 or a folder.

Every model is saved with the same metadata contract (metrics, feature schema, training-data
SHA-256, drift reference, parameters, package version), so that `medserve models` and every
service read them the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound
from pydantic import BaseModel

from medserve import object_store
from medserve.drift import ReferenceProfile
from medserve.settings import Settings

REFERENCE_FILE = "drift_reference.json"
CARD_FILE = "model_card.json"
EXPORT_SUFFIX = ".bentomodel"


class ModelSummary(BaseModel):
    """One line of `medserve models`."""

    tag: str
    created: str
    metrics: dict[str, Any]


@contextmanager
def create_model(
    name: str, metadata: dict[str, Any], card: dict[str, Any], reference: ReferenceProfile
) -> Iterator[bentoml.Model]:
    """Create a model in the store; yields it so the caller writes the framework files into
    `model.path` (the model is committed when the block exits without error).

    The drift reference and the full model card are files next to the weights; metadata holds the
    short, listable part.
    """
    with bentoml.models.create(name, metadata=metadata, labels={"platform": "medserve"}) as model:
        folder = Path(model.path)
        (folder / REFERENCE_FILE).write_text(reference.model_dump_json())
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True))
        yield model


def model_folder(tag: str) -> Path:
    """Local folder of a stored model (raises `bentoml.exceptions.NotFound`)."""
    return Path(bentoml.models.get(tag).path)


def load_reference(tag: str) -> ReferenceProfile:
    return ReferenceProfile.model_validate_json((model_folder(tag) / REFERENCE_FILE).read_text())


def load_card(tag: str) -> dict[str, Any]:
    return json.loads((model_folder(tag) / CARD_FILE).read_text())


def resolve_tag(tag: str) -> str:
    """`name:latest` or `name:version` -> the full tag of a stored model."""
    return str(bentoml.models.get(tag).tag)


def has_model(tag: str) -> bool:
    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True


def list_models(name: str | None = None) -> list[ModelSummary]:
    """Stored models, newest first."""
    models = [m for m in bentoml.models.list() if name is None or m.tag.name == name]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [
        ModelSummary(
            tag=str(m.tag),
            created=m.info.creation_time.isoformat(),
            metrics=dict(m.info.metadata.get("metrics", {})),
        )
        for m in models
    ]


def export_model(tag: str, uri: str, settings: Settings | None = None) -> str:
    """Export a stored model to `<uri>/<name>/<version>.bentomodel` (S3 prefix or folder)."""
    model = bentoml.models.get(tag)
    target = f"{uri.rstrip('/')}/{model.tag.name}/{model.tag.version}{EXPORT_SUFFIX}"
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / f"model{EXPORT_SUFFIX}"
        bentoml.models.export_model(str(model.tag), str(archive))
        return object_store.upload_file(archive, target, settings)


def import_model(uri: str, settings: Settings | None = None) -> str:
    """Import a `.bentomodel` archive from S3 or a local path; returns the tag (idempotent)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = object_store.download_file(uri, Path(tmp) / f"model{EXPORT_SUFFIX}", settings)
        try:
            model = bentoml.models.import_model(str(archive))
        except bentoml.exceptions.BentoMLException as exc:
            if "already exists" not in str(exc):
                raise
            name, version = Path(uri).parent.name, Path(uri).name.removesuffix(EXPORT_SUFFIX)
            return resolve_tag(f"{name}:{version}")
        return str(model.tag)
