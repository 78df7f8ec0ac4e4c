"""The lung CT service against a real BentoML server: DICOM/PNG in, flags, saliency, refusals."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import data_store
import httpx
import numpy as np
import pydicom
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from tritonclient.utils import InferenceServerException

from medserve import model_store
from medserve.ct.imaging import model_input, read_picture
from medserve.ct.runtime import ONNX_FILE, OnnxRunner
from medserve.ct.synthetic import write_png_slice
from tests.image_bombs import BOMBS
from tests.servers import ServiceProcess, metric_value, worker_peak_rss_mb

REAL_DATA = Path(data_store.__file__).parent / "data"
MODEL = "ct_pattern"


@pytest.fixture(scope="module")
def lung_slices(ct_dataset: Path) -> list[Path]:
    return sorted(ct_dataset.glob("*/*/*.dcm"))


def post_image(
    service: ServiceProcess, data: bytes, path: str = "/predict/image", **params: Any
) -> httpx.Response:
    return httpx.post(
        f"{service.url}{path}",
        content=data,
        params=params,
        headers=service.auth_headers,
        timeout=60,
    )


def only_prediction(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL
    (prediction,) = body["predictions"]
    return prediction


def test_dicom_slice_is_classified_without_identifiers_by_default(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    prediction = only_prediction(post_image(ct_service, lung_slices[0].read_bytes()))
    assert prediction["predicted_class"] in ("nsip", "uip")
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert prediction["confidence"] == max(prediction["probabilities"].values())
    assert prediction["input_format"] == "dicom"
    assert prediction["lung_field_fraction"] > 0.2 and not prediction["out_of_distribution"]
    assert prediction["identifiers"] is None


def test_answers_depend_on_the_slice(ct_service: ServiceProcess, lung_slices: list[Path]) -> None:
    """Not one constant answer (what a from-scratch backbone gives without BatchNorm
    recalibration), so the equality checks elsewhere compare real, input-driven outputs."""
    uip = [
        only_prediction(post_image(ct_service, path.read_bytes()))["probabilities"]["uip"]
        for path in lung_slices[::4]
    ]
    assert max(uip) - min(uip) > 1e-3, uip


def test_identifiers_are_echoed_only_when_asked(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    data = lung_slices[1].read_bytes()
    prediction = only_prediction(post_image(ct_service, data, identifiers="true"))
    dataset = pydicom.dcmread(io.BytesIO(data))
    assert prediction["identifiers"]["StudyInstanceUID"] == dataset.StudyInstanceUID
    assert prediction["identifiers"]["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert "PatientName" not in prediction["identifiers"]


def test_compressed_dicom_and_windowed_png_are_read_as_the_model_expects(
    ct_service: ServiceProcess, ct_trained: dict[str, str], lung_slices: list[Path], tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(lung_slices[2])
    plain = only_prediction(post_image(ct_service, lung_slices[2].read_bytes()))
    dataset.compress(pydicom.uid.RLELossless)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    rle = only_prediction(post_image(ct_service, buffer.getvalue()))
    assert rle["probabilities"] == plain["probabilities"]
    png_path = tmp_path / "slice.png"
    hu = pydicom.pixels.apply_rescale(dataset.pixel_array, dataset)
    write_png_slice(png_path, hu)
    png = only_prediction(post_image(ct_service, png_path.read_bytes()))
    assert png["input_format"] == "png"
    # The 8-bit picture differs from the DICOM by quantisation only, which a small model may
    # amplify: compare with the stored model run in this process on the same decoded picture.
    folder = model_store.model_folder(ct_trained["tag"])
    image_size = int(model_store.load_card(ct_trained["tag"])["image_size"])
    picture = model_input(read_picture(png_path.read_bytes()), image_size)
    expected = OnnxRunner(folder / ONNX_FILE).predict(picture[np.newaxis])[0]
    assert list(png["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_json_predict_with_base64_matches_the_image_route(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    data = lung_slices[3].read_bytes()
    body = {"instances": [{"image": base64.b64encode(data).decode()}]}
    response = httpx.post(
        f"{ct_service.url}/predict", json=body, headers=ct_service.auth_headers, timeout=60
    )
    assert response.status_code == 200, response.text
    via_json = response.json()["predictions"][0]
    via_image = only_prediction(post_image(ct_service, data))
    assert via_json["probabilities"] == via_image["probabilities"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_open_inference_protocol_bytes_tensor(
    ct_service: ServiceProcess, lung_slices: list[Path], transport: str
) -> None:
    data = lung_slices[4].read_bytes()
    module: Any = tgrpc if transport == "grpc" else thttp
    target = (
        f"127.0.0.1:{ct_service.grpc_port}"
        if transport == "grpc"
        else f"127.0.0.1:{ct_service.port}"
    )
    client = module.InferenceServerClient(target)
    tensor = module.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    # A dict of its own: tritonclient's HTTP `infer` adds a header to the one it is given.
    result = client.infer(MODEL, [tensor], headers=dict(ct_service.auth_headers))
    expected = only_prediction(post_image(ct_service, data))
    assert result.as_numpy("class")[0].decode() == expected["predicted_class"]
    probabilities = result.as_numpy("probabilities")[0]
    assert probabilities.tolist() == pytest.approx(
        [expected["probabilities"][c] for c in ("nsip", "uip")], abs=1e-6
    )
    assert not result.as_numpy("out_of_distribution")[0]


@pytest.mark.parametrize("name", ["693_J2KR.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm"])
def test_real_head_neck_and_abdomen_ct_is_flagged_out_of_distribution(
    ct_service: ServiceProcess, name: str
) -> None:
    prediction = only_prediction(post_image(ct_service, (REAL_DATA / name).read_bytes()))
    assert prediction["out_of_distribution"] is True
    assert prediction["lung_field_fraction"] < 0.05
    assert any("not a lung slice" in warning for warning in prediction["warnings"])


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        (lambda: (REAL_DATA / "MR2_J2KR.dcm").read_bytes(), 422, "not_ct"),
        (lambda: (REAL_DATA / "US1_UNCR.dcm").read_bytes(), 422, "not_ct"),
        (lambda: (REAL_DATA / "eCT_Supplemental.dcm").read_bytes(), 422, "volume_not_supported"),
        (lambda: (REAL_DATA / "RG1_UNCI.dcm").read_bytes(), 413, "body_too_large"),
        (lambda: b"%PDF-1.7\n" + b"x" * 200, 415, "unsupported_media_type"),
        (lambda: b"", 400, "empty_body"),
    ],
    ids=["mr", "ultrasound", "volume", "oversized", "pdf", "empty"],
)
def test_bad_inputs_get_a_clear_4xx_and_the_service_keeps_serving(
    ct_service: ServiceProcess, lung_slices: list[Path], payload: Any, status: int, error: str
) -> None:
    response = post_image(ct_service, payload())
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"]
    only_prediction(post_image(ct_service, lung_slices[0].read_bytes()))


def test_colour_picture_and_bad_base64_are_refused(ct_service: ServiceProcess) -> None:
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(colour).save(buffer, format="PNG")
    response = post_image(ct_service, buffer.getvalue())
    assert (response.status_code, response.json()["error"]) == (422, "unsupported_photometric")
    body = {"instances": [{"image": "bm90IGEgc2xpY2U="}]}  # base64 of "not a slice"
    response = httpx.post(
        f"{ct_service.url}/predict", json=body, headers=ct_service.auth_headers, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["field"] == "instances.0.image"
    bad_query = post_image(ct_service, buffer.getvalue(), identifiers="maybe")
    assert bad_query.status_code == 422 and bad_query.json()["field"] == "identifiers"


def test_saliency_is_a_heat_map_png_of_the_slice(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    data = lung_slices[5].read_bytes()
    response = post_image(ct_service, data, path="/saliency")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)
    assert overlay.shape == (128, 128, 3)
    # Colour where the heat is, gray elsewhere: some pixels have unequal channels.
    coloured = np.abs(overlay[..., 0] - overlay[..., 2]) > 20
    assert 0 < coloured.mean() < 1
    assert response.headers["x-predicted-class"] in ("nsip", "uip")
    other = post_image(ct_service, data, path="/saliency", **{"class": "uip"})
    assert other.status_code == 200
    unknown = post_image(ct_service, data, path="/saliency", **{"class": "covid"})
    assert unknown.status_code == 422 and "nsip" in unknown.json()["detail"]


def test_concurrent_requests_get_their_own_answers_and_are_logged_without_pixels(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    """Batches in flight at once (one per core) and adaptive batches must never mix answers."""
    files = [p.read_bytes() for p in lung_slices[:24]]
    alone = [only_prediction(post_image(ct_service, d))["probabilities"] for d in files]
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda d: post_image(ct_service, d), files))
    predictions = [only_prediction(r) for r in responses]
    for prediction, expected in zip(predictions, alone, strict=True):
        for name, probability in expected.items():
            assert prediction["probabilities"][name] == pytest.approx(probability, abs=1e-6)
    assert len({p["prediction_id"] for p in predictions}) == len(files)
    metrics = httpx.get(f"{ct_service.url}/metrics").text
    label = f'model="{MODEL}"'
    batches = metric_value(metrics, f"medserve_batch_size_count{{{label}}}")
    rows = metric_value(metrics, f"medserve_batch_size_sum{{{label}}}")
    assert rows >= batches > 0 and rows >= 2 * len(files)
    psi = f'medserve_feature_psi{{feature="lung_density_share",{label}}}'
    assert metric_value(metrics, psi) >= 0
    stored = httpx.get(
        f"{ct_service.url}/predictions/{predictions[0]['prediction_id']}",
        headers=ct_service.auth_headers,
    ).json()
    assert set(stored["inputs"]) == {"sha256", "format", "rows", "columns", "lung_field_fraction"}


def test_no_patient_data_in_the_service_log(
    ct_service: ServiceProcess, lung_slices: list[Path]
) -> None:
    data = lung_slices[6].read_bytes()
    only_prediction(post_image(ct_service, data, identifiers="true"))
    post_image(ct_service, (REAL_DATA / "bad_sequence.dcm").read_bytes())
    dataset = pydicom.dcmread(io.BytesIO(data))
    real = pydicom.dcmread(REAL_DATA / "bad_sequence.dcm")
    log = ct_service.log_path.read_text()
    for value in (
        str(dataset.PatientName),
        str(dataset.PatientID),
        str(dataset.StudyInstanceUID),
        str(real.StudyInstanceUID),
    ):
        assert value not in log


CT_BOMB_MARGIN_MB = 150


@pytest.mark.parametrize("transport", ["image", "grpc"])
def test_decompression_bombs_are_refused_with_bounded_worker_memory(
    ct_service: ServiceProcess, lung_slices: list[Path], transport: str
) -> None:
    """The bombs of tests/test_ct_image_bombs.py sent to the live service, on the image route
    and as v2 BYTES over gRPC: a 422 each, the workers' peak memory bounded, still serving."""
    peak_before = worker_peak_rss_mb(ct_service)
    for name, (make, code) in BOMBS.items():
        data = make()
        if transport == "image":
            refused = post_image(ct_service, data)
            assert refused.status_code == 422, (name, refused.text)
            assert refused.json()["error"] == code
        else:
            client = tgrpc.InferenceServerClient(f"127.0.0.1:{ct_service.grpc_port}")
            tensor = tgrpc.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([data], dtype=object))
            with pytest.raises(InferenceServerException) as raised:
                client.infer(MODEL, [tensor], headers=dict(ct_service.auth_headers))
            # v2 validation names the row and the reason (the image route's code is its own).
            assert raised.value.status() == "StatusCode.INVALID_ARGUMENT", name
            assert (raised.value.message() or "").startswith("invalid_tensor"), name
    # The workers' peak may already be high (the saliency route loads Keras); the bombs must
    # not raise it by more than this, when decoding one would add 0.2-3.4 GB.
    assert worker_peak_rss_mb(ct_service) < peak_before + CT_BOMB_MARGIN_MB
    only_prediction(post_image(ct_service, lung_slices[0].read_bytes()))
