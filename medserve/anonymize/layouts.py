"""Layout profiles: what is known to be safe on an exam of one layout, as TOML files.

A profile names the markers that recognise its layout, the page-1 fields kept (their label, how
the value sits relative to it, and the only form the value may take), the page-1 regions kept
whole (report, measurements; identifier recognisers still run inside them), and the page-2
tracing area. Everything else on both pages is removed. The shipped profiles live beside this
module (`layouts/*.toml`); a site adds or replaces profiles with `MEDSERVE_ANON_LAYOUTS_DIR`.
Profiles are validated when loaded; a run whose profiles do not load refuses to start.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pymupdf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medserve.anonymize.recognisers import fold, squash
from medserve.anonymize.textlines import Row, TextLine

BUILTIN_DIR = Path(__file__).parent / "layouts"
SIZE_TOLERANCE_POINTS = 3.0
# Vertical reach of "line below", in multiples of the label's font size.
BELOW_REACH_EMS = 3.0

Relation = Literal["same_line", "column_right", "line_below"]
ValueKind = Literal["date", "time", "sex"]
# The only forms a kept value may take (over folded text): anything else in its place is removed.
VALUE_PATTERNS: dict[ValueKind, re.Pattern[str]] = {
    "date": re.compile(r"\d{2}/\d{2}/\d{4}(?!\d)"),
    "time": re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?: ?h)?(?![\d:])"),
    "sex": re.compile(r"(?:masculino|feminino|m|f)(?![a-z])"),
}
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")]
Label = Annotated[str, Field(min_length=1, max_length=80)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeptField(_Strict):
    """A labelled value kept on page 1 (exam date, time, sex) if it has its expected form."""

    name: Name
    labels: list[Label] = Field(min_length=1)
    relation: Relation
    value: ValueKind
    required: bool = True


class KeptRegion(_Strict):
    """Rows kept whole on page 1, from a start label's row to an end label's row (exclusive),
    `max_rows` rows, or the page's end."""

    name: Name
    start_labels: list[Label] = Field(min_length=1)
    end_labels: list[Label] = Field(default_factory=list)
    max_rows: int | None = Field(default=None, ge=1)
    required: bool = True


class PageOne(_Strict):
    fields: list[KeptField] = Field(default_factory=list)
    regions: list[KeptRegion] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> PageOne:
        names = [f.name for f in self.fields] + [r.name for r in self.regions]
        if len(names) != len(set(names)):
            raise ValueError("page_one field and region names must be unique")
        return self


class PageTwo(_Strict):
    size: tuple[float, float] = Field(description="Width, height in points.")
    tracing_area: tuple[float, float, float, float] = Field(
        description="x0, y0, x1, y1 in points from the top-left: the only part of page 2 kept."
    )

    @model_validator(mode="after")
    def _area_inside_page(self) -> PageTwo:
        x0, y0, x1, y1 = self.tracing_area
        width, height = self.size
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"tracing_area {self.tracing_area} is not a rectangle on the page")
        return self

    @property
    def landscape(self) -> bool:
        return self.size[0] > self.size[1]


class LayoutProfile(_Strict):
    name: Name
    description: str = ""
    markers: list[Label] = Field(min_length=1, description="All must be on page 1.")
    page_one: PageOne
    page_two: PageTwo


class LayoutError(ValueError):
    """The layout profiles cannot be loaded (the run refuses to start)."""


def _read(path: Path) -> LayoutProfile:
    try:
        return LayoutProfile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise LayoutError(f"layout {path.name}: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise LayoutError(f"layout {path.name}: {where}: {first['msg']}") from None


def load_layouts(site_dir: Path | None = None) -> list[LayoutProfile]:
    """The shipped profiles, then the site's (a site profile replaces a shipped one by name)."""
    profiles = {p.name: p for p in map(_read, sorted(BUILTIN_DIR.glob("*.toml")))}
    if site_dir is not None:
        if not site_dir.is_dir():
            raise LayoutError(f"layouts folder {site_dir} does not exist")
        site = [_read(path) for path in sorted(site_dir.glob("*.toml"))]
        if not site:
            raise LayoutError(f"layouts folder {site_dir} holds no *.toml profile")
        profiles |= {p.name: p for p in site}
    return list(profiles.values())


def _size_matches(rect: pymupdf.Rect, size: tuple[float, float]) -> bool:
    return (
        abs(rect.width - size[0]) <= SIZE_TOLERANCE_POINTS
        and abs(rect.height - size[1]) <= SIZE_TOLERANCE_POINTS
    )


def match_layout(
    profiles: list[LayoutProfile], rows: list[Row], page_two: pymupdf.Rect
) -> LayoutProfile | None:
    """The profile whose markers are all on page 1 and whose page 2 has this size (most markers
    first, then by name); None if there is none."""
    text = squash(" ".join(row.text for row in rows))
    candidates = [
        p
        for p in profiles
        if all(squash(m) in text for m in p.markers) and _size_matches(page_two, p.page_two.size)
    ]
    candidates.sort(key=lambda p: (-len(p.markers), p.name))
    return candidates[0] if candidates else None


# --- where the kept parts are on one page ------------------------------------------------------


@dataclass
class KeptValue:
    """A kept field as found: its label's box and its value's box and text."""

    label: pymupdf.Rect
    value: pymupdf.Rect
    text: str


@dataclass
class KeptZones:
    """Where a profile's kept parts are on one page 1."""

    markers: list[pymupdf.Rect] = field(default_factory=list)
    fields: dict[str, KeptValue] = field(default_factory=dict)
    regions: dict[str, pymupdf.Rect] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def rects(self) -> list[pymupdf.Rect]:
        """Every kept rectangle: markers, field labels and values, regions."""
        kept = [*self.markers, *self.regions.values()]
        for value in self.fields.values():
            kept += [value.label, value.value]
        return kept


def _words(text: str) -> str:
    """`text`'s words, escaped, with one to three whitespace characters between them (never
    an unbounded run: every layout pattern stays linear-time, see recognisers.py)."""
    return r"\s{1,3}".join(re.escape(word) for word in squash(text).split())


def label_at_start(label: str) -> re.Pattern[str]:
    """A region's start or end label at the start of a segment."""
    return re.compile(r"\s{0,3}" + _words(label) + r"(?![a-z0-9])")


def label_with_colon(label: str) -> re.Pattern[str]:
    """A field's label followed by its colon, anywhere in a segment."""
    return re.compile(r"(?<![a-z0-9])" + _words(label) + r"\s{0,2}:")


def marker_pattern(marker: str) -> re.Pattern[str]:
    """A layout marker anywhere in a segment."""
    return re.compile(_words(marker))


def layout_patterns(profile: LayoutProfile) -> list[re.Pattern[str]]:
    """Every pattern a profile's labels and markers become (its labels are site data)."""
    one = profile.page_one
    patterns = [marker_pattern(m) for m in profile.markers]
    patterns += [label_with_colon(label) for f in one.fields for label in f.labels]
    regions = [label for r in one.regions for label in (*r.start_labels, *r.end_labels)]
    return patterns + [label_at_start(label) for label in regions]


def _is_label(segment: TextLine, label: str) -> bool:
    """The whole segment is `label` (a trailing colon allowed): a table or stacked label."""
    return squash(segment.text).rstrip(" :") == squash(label)


def _value(segment: TextLine, start: int, kind: ValueKind) -> tuple[pymupdf.Rect, str] | None:
    folded = fold(segment.text)
    while start < len(folded) and folded[start] in " :":
        start += 1
    match = VALUE_PATTERNS[kind].match(folded, start)
    if match is None:
        return None
    rect = segment.cover(match.start(), match.end())
    return (rect, segment.text[match.start() : match.end()]) if rect is not None else None


def _same_line(rows: list[Row], spec: KeptField) -> KeptValue | None:
    for row in rows:
        for segment in row.segments:
            folded = fold(segment.text)
            for label in spec.labels:
                for match in label_with_colon(label).finditer(folded):
                    found = _value(segment, match.end(), spec.value)
                    label_rect = segment.cover(match.start(), match.end())
                    if found and label_rect is not None:
                        return KeptValue(label_rect, *found)
    return None


def _column_right(rows: list[Row], spec: KeptField) -> KeptValue | None:
    for row in rows:
        for index, segment in enumerate(row.segments[:-1]):
            if any(_is_label(segment, label) for label in spec.labels):
                found = _value(row.segments[index + 1], 0, spec.value)
                if found:
                    return KeptValue(segment.bbox, *found)
    return None


def _word_starts(segment: TextLine) -> list[int]:
    text = segment.text
    return [i for i, c in enumerate(text) if not c.isspace() and (i == 0 or text[i - 1] == " ")]


def _line_below(rows: list[Row], spec: KeptField) -> KeptValue | None:
    for index, row in enumerate(rows[:-1]):
        for label in row.segments:
            if not any(_is_label(label, name) for name in spec.labels):
                continue
            reach = label.bbox.y1 + BELOW_REACH_EMS * label.size
            for below in rows[index + 1 :]:
                if below.bbox.y0 > reach:
                    break
                # The value starts under the label: at a word start aligned with it, even when a
                # long value in the column to the left runs into it (one segment, then).
                for candidate in below.segments:
                    for start in _word_starts(candidate):
                        if abs(candidate.boxes[start].x0 - label.bbox.x0) <= label.size:
                            found = _value(candidate, start, spec.value)
                            if found:
                                return KeptValue(label.bbox, *found)
    return None


_RELATIONS = {"same_line": _same_line, "column_right": _column_right, "line_below": _line_below}


def _region(rows: list[Row], spec: KeptRegion, page: pymupdf.Rect) -> pymupdf.Rect | None:
    starts = [label_at_start(label) for label in spec.start_labels]
    ends = [label_at_start(label) for label in spec.end_labels]

    def has(row: Row, patterns: list[re.Pattern[str]]) -> bool:
        return any(p.match(fold(s.text)) for p in patterns for s in row.segments)

    for index, row in enumerate(rows):
        if not has(row, starts):
            continue
        end = next((j for j in range(index + 1, len(rows)) if has(rows[j], ends)), len(rows))
        if spec.max_rows is not None:
            end = min(end, index + spec.max_rows)
        bottom = rows[end].bbox.y0 if end < len(rows) else page.y1
        return pymupdf.Rect(page.x0, row.bbox.y0, page.x1, max(bottom, row.bbox.y1))
    return None


def _markers(rows: list[Row], markers: list[str]) -> list[pymupdf.Rect]:
    rects: list[pymupdf.Rect] = []
    for marker in markers:
        pattern = marker_pattern(marker)
        for row in rows:
            for segment in row.segments:
                for match in pattern.finditer(fold(segment.text)):
                    rect = segment.cover(*match.span())
                    if rect is not None:
                        rects.append(rect)
    return rects


def locate(profile: LayoutProfile, rows: list[Row], page: pymupdf.Rect) -> KeptZones:
    """Where `profile`'s kept parts are among `rows` (page 1, in page coordinates)."""
    zones = KeptZones(markers=_markers(rows, profile.markers))
    for spec in profile.page_one.fields:
        found = _RELATIONS[spec.relation](rows, spec)
        if found is not None:
            zones.fields[spec.name] = found
        elif spec.required:
            zones.missing.append(spec.name)
    for region in profile.page_one.regions:
        rect = _region(rows, region, page)
        if rect is not None:
            zones.regions[region.name] = rect
        elif region.required:
            zones.missing.append(region.name)
    return zones
