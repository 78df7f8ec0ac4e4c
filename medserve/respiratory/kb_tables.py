"""The knowledge base in the platform's database: the source system's entities as tables.

The source (SOURCES.md system 3) kept diseases, their symptoms and relevant factors in MySQL
through Hibernate; symptoms and factors are reusable attribute/value pairs shared by many
diseases, each link carrying a symbolic probability. The same shape here, one set of rows per KB
version, so that a reviewer can query "which diseases list `tosse: com catarro`, and how likely"
in SQL and `medserve triage report` can join confirmed consults with what the KB said.

The service itself answers from the KB file pinned in the model store (immutable, identical on
every replica, no database read per step); these tables are its relational mirror, written by
`medserve triage load-kb` for the same version and SHA-256.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import ForeignKey, Index, Integer, String, Text, delete, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapped, mapped_column

from medserve.database.types import UtcDateTime
from medserve.prediction_log import Base, utcnow
from medserve.respiratory.kb import KnowledgeBase

ValueKind = Literal["symptom", "factor"]


class KbVersionRow(Base):
    """One loaded KB version (the model store holds the file under `model_tag`)."""

    __tablename__ = "kb_versions"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    review_status: Mapped[str] = mapped_column(String(32))
    model_tag: Mapped[str | None] = mapped_column(String(128), nullable=True)
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class KbDiseaseRow(Base):
    __tablename__ = "kb_diseases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_version: Mapped[str] = mapped_column(
        String(32), ForeignKey("kb_versions.version", ondelete="CASCADE")
    )
    code: Mapped[str] = mapped_column(String(64))  # the KB's disease id
    position: Mapped[int] = mapped_column(Integer)  # alphabetical by title (the source's order)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    icd10: Mapped[str] = mapped_column(String(16))
    probability: Mapped[str] = mapped_column(String(8))  # the disease's symbolic prior
    source: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_kb_diseases_version_code", "kb_version", "code", unique=True),)


class KbAttributeRow(Base):
    """A reusable attribute (`tosse`, `respiração`, `idade`)."""

    __tablename__ = "kb_attributes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_version: Mapped[str] = mapped_column(
        String(32), ForeignKey("kb_versions.version", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_kb_attributes_version_name", "kb_version", "name", unique=True),)


class KbValueRow(Base):
    """An attribute/value pair: a symptom (`tosse: com catarro`) or a factor value (`idade:
    idoso`). `code` is the question id a consult answers (factor values: `<factor>=<value>`)."""

    __tablename__ = "kb_values"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attribute_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_attributes.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(8))
    code: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)  # symptoms: by diseases sharing them

    __table_args__ = (Index("ix_kb_values_attribute", "attribute_id"),)


class KbLinkRow(Base):
    """Disease <-> attribute/value pair, many-to-many, with the symbolic probability."""

    __tablename__ = "kb_links"

    disease_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_diseases.id", ondelete="CASCADE"), primary_key=True
    )
    value_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_values.id", ondelete="CASCADE"), primary_key=True
    )
    probability: Mapped[str] = mapped_column(String(8))

    __table_args__ = (Index("ix_kb_links_value", "value_id"),)


def factor_code(factor: str, value: str) -> str:
    return f"{factor}={value}"


def store_kb(engine: Engine, kb: KnowledgeBase, model_tag: str | None) -> bool:
    """Write `kb` as its version's rows, replacing an older load of the same version only when
    its SHA-256 differs (an edited file that kept its version); False when already there."""
    with engine.begin() as connection:
        loaded = connection.execute(
            select(KbVersionRow.sha256).where(KbVersionRow.version == kb.version)
        ).scalar_one_or_none()
        if loaded == kb.sha256:
            return False
        if loaded is not None:
            _delete_version(connection, kb.version)
        connection.execute(
            insert(KbVersionRow).values(
                version=kb.version,
                sha256=kb.sha256,
                review_status=kb.review_status,
                model_tag=model_tag,
                loaded_at=utcnow(),
            )
        )
        diseases = _insert_diseases(connection, kb)
        values = _insert_values(connection, kb)
        _insert_links(connection, kb, diseases, values)
    return True


def _delete_version(connection: Connection, version: str) -> None:
    # Explicit, child tables first: SQLite enforces ON DELETE CASCADE only with a pragma.
    diseases = select(KbDiseaseRow.id).where(KbDiseaseRow.kb_version == version)
    attributes = select(KbAttributeRow.id).where(KbAttributeRow.kb_version == version)
    connection.execute(delete(KbLinkRow).where(KbLinkRow.disease_id.in_(diseases)))
    connection.execute(delete(KbValueRow).where(KbValueRow.attribute_id.in_(attributes)))
    connection.execute(delete(KbDiseaseRow).where(KbDiseaseRow.kb_version == version))
    connection.execute(delete(KbAttributeRow).where(KbAttributeRow.kb_version == version))
    connection.execute(delete(KbVersionRow).where(KbVersionRow.version == version))


def _insert_diseases(connection: Connection, kb: KnowledgeBase) -> dict[str, int]:
    ids = {}
    for position, disease in enumerate(kb.diseases):
        ids[disease.id] = connection.execute(
            insert(KbDiseaseRow)
            .values(
                kb_version=kb.version,
                code=disease.id,
                position=position,
                title=disease.title,
                description=disease.description,
                icd10=disease.icd10,
                probability=disease.prior,
                source=disease.source,
            )
            .returning(KbDiseaseRow.id)
        ).scalar_one()
    return ids


def _attribute_id(
    connection: Connection, kb: KnowledgeBase, cache: dict[str, int], name: str
) -> int:
    if name not in cache:
        cache[name] = connection.execute(
            insert(KbAttributeRow)
            .values(kb_version=kb.version, name=name)
            .returning(KbAttributeRow.id)
        ).scalar_one()
    return cache[name]


def _insert_values(connection: Connection, kb: KnowledgeBase) -> dict[str, int]:
    """Every symptom and factor value -> its `kb_values` id (by question code)."""
    attributes: dict[str, int] = {}
    rows: list[tuple[str, ValueKind, str, str, str, int]] = [
        (s.attribute, "symptom", s.id, s.value, s.question, i) for i, s in enumerate(kb.symptoms)
    ]
    rows += [
        (f.attribute, "factor", factor_code(f.id, value), label, f.question, i)
        for f in kb.factors
        for i, (value, label) in enumerate(f.values.items())
    ]
    ids = {}
    for attribute, kind, code, value, question, position in rows:
        ids[code] = connection.execute(
            insert(KbValueRow)
            .values(
                attribute_id=_attribute_id(connection, kb, attributes, attribute),
                kind=kind,
                code=code,
                value=value,
                question=question,
                position=position,
            )
            .returning(KbValueRow.id)
        ).scalar_one()
    return ids


def _insert_links(
    connection: Connection, kb: KnowledgeBase, diseases: dict[str, int], values: dict[str, int]
) -> None:
    links = [
        {"disease_id": diseases[d], "value_id": values[s], "probability": p}
        for d, table in kb.disease_symptoms.items()
        for s, p in table.items()
    ]
    links += [
        {"disease_id": diseases[d], "value_id": values[factor_code(f, v)], "probability": p}
        for d, factors in kb.disease_factors.items()
        for f, table in factors.items()
        for v, p in table.items()
    ]
    if links:
        connection.execute(insert(KbLinkRow), links)


def stored_symptoms(engine: Engine, version: str) -> dict[str, dict[str, str]]:
    """disease id -> {symptom id: probability} as the tables hold them for `version`."""
    query = (
        select(KbDiseaseRow.code, KbValueRow.code, KbLinkRow.probability)
        .join(KbLinkRow, KbLinkRow.disease_id == KbDiseaseRow.id)
        .join(KbValueRow, KbValueRow.id == KbLinkRow.value_id)
        .where(KbDiseaseRow.kb_version == version, KbValueRow.kind == "symptom")
    )
    found: dict[str, dict[str, str]] = {}
    with engine.connect() as connection:
        for disease, symptom, probability in connection.execute(query):
            found.setdefault(disease, {})[symptom] = probability
    return found
