"""Exams written by other PDF producers than PyMuPDF, with the fonts ECG carts embed.

- `reportlab_exam`: the standard layout by reportlab, fields in Bitstream Vera (a subset TrueType
  font reportlab embeds), the title in DarkGardenMK (an embedded Type1 font shipped with reportlab);
- `fpdf2_exam`: the table layout by fpdf2, in DejaVu Sans (matplotlib's copy), embedded as a
  subset CID TrueType font (Type0, Identity-H);
- `matplotlib_exam`: the stacked layout drawn by matplotlib's PDF backend, every glyph in a Type3
  font (matplotlib's default `pdf.fonttype` 3), report text included;
- `incremental_update`: any of them with the name changed in an incremental update (the old
  revision, old name included, stays in the file).
Fonts come from inside installed packages; nothing is fetched.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pymupdf
import reportlab

from medserve.anonymize.synthetic import GEOMETRIES

A4 = (595.28, 841.89)
DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
REPORTLAB_FONTS = Path(reportlab.__file__).parent / "fonts"


@dataclass
class ProducedExam:
    """An exam by another producer: its PDF, the identifying strings on it, the kept ones."""

    pdf: bytes
    identifiers: list[str]
    kept: list[str]
    report: list[str] = field(default_factory=list)


PATIENT = {
    "Nome": "Wellington Quintella Brandão",
    "CPF": "529.982.247-25",
    "RG": "27.346.468-X",
    "Data de Nascimento": "14/07/1982",
    "Telefone": "(11) 98765-4321",
    "E-mail": "wquintella@uol.com.br",
}
REPORT = ["Ritmo sinusal regular.", "Frequência cardíaca de 72 bpm.", "Eixo elétrico normal."]
NAMED_LINE = "Paciente Wellington Quintella em uso de amiodarona."
DOCTOR, CRM = "Dra. Rosângela Falcão", "CRM-SP 104729"


def _trace(width: float, leads: int) -> list[np.ndarray]:
    """Twelve-lead-ish curves (x in 0..width, y in millivolts)."""
    t = np.linspace(0, 4, 400)
    beat = np.exp(-((t % 0.8 - 0.4) ** 2) / 0.0005) - 0.2 * np.exp(-((t % 0.8 - 0.6) ** 2) / 0.004)
    return [np.column_stack((t / 4 * width, beat * (1 + 0.1 * k))) for k in range(leads)]


def reportlab_exam() -> ProducedExam:
    from reportlab.lib.pagesizes import A4 as RL_A4
    from reportlab.lib.pagesizes import landscape
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen.canvas import Canvas

    pdfmetrics.registerFont(TTFont("Vera", str(REPORTLAB_FONTS / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont("VeraBd", str(REPORTLAB_FONTS / "VeraBd.ttf")))
    face = pdfmetrics.EmbeddedType1Face(
        str(REPORTLAB_FONTS / "DarkGardenMK.afm"), str(REPORTLAB_FONTS / "DarkGardenMK.pfb")
    )
    pdfmetrics.registerTypeFace(face)
    pdfmetrics.registerFont(pdfmetrics.Font("DarkGarden", "DarkGardenMK", "WinAnsiEncoding"))
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=RL_A4, invariant=1)
    height = RL_A4[1]
    canvas.setFont("DarkGarden", 18)
    canvas.drawString(50, height - 60, "ECG de Repouso")
    y = 110.0
    canvas.setFont("Vera", 10)
    fields = [*PATIENT.items(), ("Sexo", "Masculino"), ("Data", "16/05/2023"), ("Hora", "09:41")]
    fields += [("Responsável", f"{DOCTOR} {CRM}")]
    for label, value in fields:
        canvas.setFont("VeraBd", 10)
        canvas.drawString(50, height - y, f"{label}:")
        canvas.setFont("Vera", 10)
        value_x = 50 + pdfmetrics.stringWidth(f"{label}: ", "VeraBd", 10)
        canvas.drawString(value_x, height - y, value)
        y += 16
    y += 10
    canvas.setFont("VeraBd", 11)
    canvas.drawString(50, height - y, "Laudo:")
    canvas.setFont("Vera", 10)
    for line in [REPORT[0], NAMED_LINE, *REPORT[1:]]:
        y += 16
        canvas.drawString(60, height - y, line)
    canvas.showPage()
    canvas.setPageSize(landscape(RL_A4))
    geometry = GEOMETRIES["standard"]
    page_height = landscape(RL_A4)[1]
    x0, y0, x1, y1 = geometry.tracing
    canvas.setStrokeColorRGB(1, 0.75, 0.8)
    for x in np.arange(x0, x1, 14.17):
        canvas.line(x, page_height - y0, x, page_height - y1)
    canvas.setStrokeColorRGB(0, 0, 0)
    for row, curve in enumerate(_trace(x1 - x0 - 20, 4)):
        base = page_height - (y0 + 60 + row * 100)
        path = canvas.beginPath()
        path.moveTo(x0 + 10 + curve[0, 0], base + curve[0, 1] * 28)
        for px, mv in curve[1:]:
            path.lineTo(x0 + 10 + px, base + mv * 28)
        canvas.drawPath(path, stroke=1, fill=0)
        canvas.setFont("Vera", 9)
        canvas.drawString(x0 + 14, base + 40, ("I", "II", "III", "aVR")[row])
    canvas.setFont("VeraBd", 9)
    canvas.drawString(geometry.stamp[0] + 20, page_height - geometry.stamp[1] - 30, DOCTOR)
    canvas.drawString(geometry.stamp[0] + 20, page_height - geometry.stamp[1] - 45, CRM)
    canvas.save()
    return ProducedExam(
        buffer.getvalue(),
        [*PATIENT.values(), "Wellington", "Quintella", DOCTOR[5:], CRM],
        ["ECG de Repouso", "Masculino", "16/05/2023", "09:41", *REPORT],
        REPORT,
    )


def fpdf2_exam() -> ProducedExam:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=A4)
    pdf.add_font("DejaVu", fname=str(DEJAVU))
    pdf.add_page()
    pdf.set_font("DejaVu", size=16)
    pdf.text(40, 72, "ELETROCARDIOGRAMA")
    pdf.set_font("DejaVu", size=9)
    rows = [
        ("Paciente", PATIENT["Nome"]),
        ("CPF", PATIENT["CPF"]),
        ("Data de nascimento", PATIENT["Data de Nascimento"]),
        ("Sexo", "Feminino"),
        ("Telefone", PATIENT["Telefone"]),
        ("Data do exame", "16/05/2023"),
        ("Hora do exame", "09:41"),
        ("Solicitante", DOCTOR),
    ]
    y = 122.0
    for label, value in rows:
        pdf.text(44, y, label)
        pdf.text(190, y, value)
        pdf.line(40, y + 5, 555, y + 5)
        y += 17
    y += 8
    pdf.text(44, y, "Medidas")
    pdf.text(190, y, "FC: 72 bpm   PR: 160 ms   QRS: 92 ms")
    y += 17
    pdf.text(190, y, "QT/QTc: 380/412 ms   Eixo: +45°")
    y += 27
    pdf.set_font("DejaVu", size=11)
    pdf.text(40, y, "Laudo eletrocardiográfico")
    pdf.set_font("DejaVu", size=10)
    for line in [REPORT[0], NAMED_LINE, *REPORT[1:]]:
        y += 17
        pdf.text(52, y, line)
    geometry = GEOMETRIES["table"]
    pdf.add_page(orientation="L")
    x0, y0, x1, y1 = geometry.tracing
    pdf.set_draw_color(255, 190, 200)
    for x in np.arange(x0, x1, 14.17):
        pdf.line(float(x), y0, float(x), y1)
    pdf.set_draw_color(0, 0, 0)
    for row, curve in enumerate(_trace(x1 - x0 - 20, 4)):
        base = y0 + 60 + row * 100
        points = [(x0 + 10 + px, base - mv * 28) for px, mv in curve]
        pdf.polyline(points)
        pdf.text(x0 + 14, base - 40, ("I", "II", "III", "aVR")[row])
    pdf.text(geometry.stamp[0] + 20, geometry.stamp[1] + 30, f"{DOCTOR}  {CRM}")
    pdf.text(40, 40, f"Paciente: {PATIENT['Nome']}  CPF: {PATIENT['CPF']}")
    shown = [PATIENT[k] for k in ("Nome", "CPF", "Data de Nascimento", "Telefone")]
    return ProducedExam(
        bytes(pdf.output()),
        [*shown, "Wellington", "Quintella", DOCTOR[5:], CRM],
        ["ELETROCARDIOGRAMA", "Feminino", "16/05/2023", "09:41", *REPORT],
        REPORT,
    )


def matplotlib_exam() -> ProducedExam:
    """The stacked layout drawn by matplotlib: every glyph, report included, in Type3 fonts."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    def text(figure: Figure, x: float, y: float, s: str, size: float, **kw: object) -> None:
        width, height = figure.get_size_inches() * 72
        figure.text(x / width, 1 - y / height, s, fontsize=size, va="baseline", **kw)

    buffer = io.BytesIO()
    with matplotlib.rc_context({"pdf.fonttype": 3}), PdfPages(buffer) as pages:
        first = Figure(figsize=(A4[0] / 72, A4[1] / 72))
        text(first, 150, 70, "Relatório de Eletrocardiograma", 15, weight="bold")
        cells = [
            (40, 118, "Paciente", PATIENT["Nome"]),
            (40, 148, "CPF", PATIENT["CPF"]),
            (220, 148, "Nascimento", PATIENT["Data de Nascimento"]),
            (40, 178, "Sexo", "Masculino"),
            (220, 178, "Data do exame", "16/05/2023"),
            (400, 178, "Horário", "09:41"),
            (40, 208, "E-mail", PATIENT["E-mail"]),
        ]
        for x, y, label, value in cells:
            text(first, x, y, label, 7.5, color="0.35")
            text(first, x, y + 12, value, 10)
        text(first, 40, 250, "Parâmetros", 10, weight="bold")
        text(first, 130, 250, "FC 72 bpm  ·  PR 160 ms  ·  QRS 92 ms", 9.5)
        text(first, 130, 265, "QT/QTc 380/412 ms  ·  Eixo +45°", 9.5)
        text(first, 40, 300, "Conclusão", 11, weight="bold")
        for index, line in enumerate([REPORT[0], NAMED_LINE, *REPORT[1:]]):
            text(first, 52, 318 + 16 * index, line, 10)
        text(first, 40, 770, "Responsável técnico", 7.5, color="0.35")
        text(first, 40, 782, f"{DOCTOR} - {CRM}", 10)
        pages.savefig(first)
        geometry = GEOMETRIES["stacked"]
        second = Figure(figsize=(A4[0] / 72, A4[1] / 72))
        width, height = A4
        x0, y0, x1, y1 = geometry.tracing
        axes = second.add_axes((x0 / width, 1 - y1 / height, (x1 - x0) / width, (y1 - y0) / height))
        for row, curve in enumerate(_trace(1.0, 6)):
            axes.plot(curve[:, 0], curve[:, 1] * 0.1 + row, color="black", linewidth=0.6)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlim(0, 1)
        text(second, x0 + 6, y0 + 14, "I", 9)
        text(second, geometry.stamp[0] + 20, geometry.stamp[1] + 30, f"{DOCTOR} {CRM}", 9)
        pages.savefig(second)
    return ProducedExam(
        buffer.getvalue(),
        [*[v for k, v in PATIENT.items() if k in ("Nome", "CPF", "Data de Nascimento", "E-mail")],
         "Wellington", "Quintella", DOCTOR[5:], CRM],
        ["Relatório de Eletrocardiograma", "Masculino", "16/05/2023", "09:41", *REPORT],
        REPORT,
    )  # fmt: skip


def incremental_update(exam: ProducedExam, new_name: str) -> ProducedExam:
    """`exam` with the patient's name replaced in an incremental update: the earlier revision,
    with the old name, stays in the file before the first %%EOF."""
    old_name = PATIENT["Nome"]
    with tempfile.TemporaryDirectory(prefix="incremental-") as tmp:
        path = Path(tmp) / "exam.pdf"
        path.write_bytes(exam.pdf)
        document = pymupdf.open(path)
        page = document[0]
        hit = page.search_for(old_name)[0]
        page.add_redact_annot(hit, fill=(1, 1, 1))
        page.apply_redactions()
        page.insert_text((hit.x0, hit.y1 - 2), new_name, fontsize=10)
        document.saveIncr()
        document.close()
        data = path.read_bytes()
    assert data.startswith(exam.pdf) and data.count(b"%%EOF") >= 2
    return ProducedExam(data, [*exam.identifiers, new_name], exam.kept, exam.report)
