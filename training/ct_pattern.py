"""Train the lung CT pattern classifier (UIP vs NSIP): four backbones compared, one stored.

As in the source system: random undersampling of the majority class, a stratified
train/validation/test split (here by patient, so no patient's slices land in two splits),
augmentation of train *and validation* (the source did both; validation accuracy is therefore
measured partly on augmented near-copies, while the test split is never augmented), Adam
lr 1e-4, L2 1e-3 on the head, batch 32, up to 30 epochs with early stopping, and the winner
chosen by best validation accuracy, ties broken by the fewest parameters.

The architectures train as parallel Ray tasks, one per backbone, each with `cpus_per_trial`
CPUs; without a Ray runtime (plain function call) they train one after another in-process.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sklearn.metrics import roc_auc_score

from medserve import model_store
from medserve.ct.architectures import (
    ARCHITECTURES,
    ArchitectureName,
    build_classifier,
    imagenet_weights,
)
from medserve.ct.dataset import (
    Augmentation,
    SliceSet,
    augment,
    load_slices,
    split_by_patient,
    undersample,
)
from medserve.ct.imaging import Window
from medserve.ct.model import DRIFT_FEATURES, MODEL_NAME, drift_features
from medserve.ct.runtime import KERAS_FILE, ONNX_FILE, export_onnx, onnx_gap
from medserve.ct.synthetic import SyntheticCtConfig, load_or_generate
from medserve.drift import build_reference
from medserve.settings import get_settings
from training.progress import ProgressCallback, Reporter

ONNX_EQUALITY_TOLERANCE = 1e-3  # in probability, the bound for a faster runtime
LATENCY_REPEATS = 10
UNWATCHED = Reporter(MODEL_NAME)  # reports to nobody


class CtTrainConfig(BaseSettings):
    """Training parameters (`MEDSERVE_CT_TRAIN_*`); hyperparameters default to the source's.

    Image size, data volume and epochs default to what 2 CPU cores train in minutes (`make up`:
    the four backbones at 128 px for 30 epochs took over 25 minutes here, VGG16 alone most of
    it); the source's run is `IMAGE_SIZE=512 EPOCHS=30 PATIENCE=5` on a cluster
    (k8s/base/rayjob-train-ct.yaml).
    """

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_CT_TRAIN_", extra="ignore")

    seed: int = 7
    data_dir: Path | None = Field(
        default=None, description="A real dataset `<root>/<label>/<patient>/*.dcm|png`."
    )
    synthetic_nsip_patients: int = Field(default=10, ge=3)
    synthetic_uip_patients: int = Field(default=5, ge=3)
    synthetic_slices_per_patient: int = Field(default=12, ge=1)
    synthetic_size: int = Field(default=256, ge=64, le=512)
    image_size: int = Field(default=96, ge=32, le=1024, description="Model input side (px).")
    architectures: list[ArchitectureName] = Field(
        default_factory=lambda: list(ARCHITECTURES), min_length=1
    )
    mobilenet_alpha: float = Field(default=1.0, gt=0)
    weights: Literal["none", "imagenet"] = "none"
    imagenet_weights_dir: Path | None = Field(
        default=None, description="Folder holding Keras' no-top ImageNet weight files."
    )
    split_fractions: tuple[float, float, float] = (0.635, 0.165, 0.2)  # 422 / 110 / 134
    augment_copies: int = Field(default=3, ge=0, description="Synthetic images per original.")
    augment_validation: bool = Field(default=True, description="The source augmented it too.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Adam's rate; unset: the source's 1e-4 with ImageNet weights (a fine-tuning "
        "rate), 1e-3 from scratch, where 1e-4 left MobileNetV2 at chance after 15 epochs here.",
    )
    l2: float = Field(default=1e-3, ge=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=12, ge=1, description="The source: up to 30.")
    patience: int = Field(default=4, ge=1, description="Early stopping on validation loss.")
    bn_momentum: float = Field(default=0.9, gt=0, lt=1)
    cpus_per_trial: float = Field(default=1.0, gt=0, description="Ray CPUs per architecture.")
    run_eagerly: bool = Field(
        default=False,
        description="Train step by step without tracing a graph. Only for runs of a few steps "
        "(smoke tests, CI): at 64 px, batch 32, MobileNetV2's first traced epoch took ~40 s "
        "here and later ones 0.4 s, an eager step ~3 s, so eager pays below ~12 steps.",
    )
    version: str | None = None

    @property
    def adam_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.weights == "imagenet" else 1e-3


class TrialResult(BaseModel):
    """One architecture's run: the comparison table's row plus its trained model file."""

    architecture: str
    validation_accuracy: float
    validation_auroc: float | None
    test_accuracy: float
    test_auroc: float | None
    parameters: int
    epochs_run: int
    train_seconds: float
    started_at: float = Field(description="Unix time the fit started (shows the overlap).")
    finished_at: float
    cpu_latency_ms: float
    keras_model: bytes = Field(repr=False, exclude=True)


class CtTrainResult(BaseModel):
    tag: str
    metrics: dict[str, Any]
    report: str


class TrainingData(BaseModel):
    """What every trial trains on (put once into Ray's object store)."""

    model_config = {"arbitrary_types_allowed": True}

    train_images: Any
    train_labels: Any
    validation_images: Any
    validation_labels: Any
    test_images: Any
    test_labels: Any
    calibration_images: Any  # un-augmented training slices, for BatchNorm statistics
    classes: tuple[str, ...]


def dataset_root(config: CtTrainConfig) -> Path:
    """The real dataset, or the cached synthetic one for this seed and size."""
    if config.data_dir is not None:
        return config.data_dir
    synthetic = SyntheticCtConfig(
        seed=config.seed,
        nsip_patients=config.synthetic_nsip_patients,
        uip_patients=config.synthetic_uip_patients,
        slices_per_patient=config.synthetic_slices_per_patient,
        size=config.synthetic_size,
    )
    return load_or_generate(synthetic, get_settings().home / "cache" / "ct")


def prepare(
    slices: SliceSet, config: CtTrainConfig
) -> tuple[TrainingData, dict[str, Any], SliceSet]:
    """Split by patient, undersample each split, augment; returns the data, split counts and
    the training originals (for the drift reference)."""
    train, validation, test = split_by_patient(slices, config.split_fractions, config.seed)
    train, validation, test = (
        undersample(s, config.seed + i) for i, s in enumerate((train, validation, test))
    )
    augmentation = Augmentation(copies=config.augment_copies)
    train_augmented = augment(train, augmentation, config.seed)
    if config.augment_validation:
        validation = augment(validation, augmentation, config.seed + 1)
    counts = {
        "train_originals": len(train),
        "train": len(train_augmented),
        "validation": len(validation),
        "test": len(test),
        "patients": {
            name: len(np.unique(part.patients))
            for name, part in (("train", train), ("validation", validation), ("test", test))
        },
    }
    data = TrainingData(
        train_images=train_augmented.images,
        train_labels=train_augmented.labels,
        validation_images=validation.images,
        validation_labels=validation.labels,
        test_images=test.images,
        test_labels=test.labels,
        calibration_images=train.images,
        classes=slices.classes,
    )
    return data, counts, train


def _auroc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr"))


def _limit_threads(cpus: float) -> None:
    """TF's thread pools sized to the trial's CPU budget (must precede any TF op)."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process: keep its pools
        pass


def recalibrate_batch_norm(model: Any, images: np.ndarray, batch_size: int) -> None:
    """Set every BatchNormalization layer's moving statistics to the average of its batch
    statistics over `images`, as `torch.optim.swa_utils.update_bn` does.

    From scratch and after few steps, the moving averages still sit near their initial values
    while the network trained on batch statistics; in inference mode it then shrinks the
    input's signal layer by layer until every slice gets the same probability (seen here with
    MobileNetV2 after 90 steps). Validation loss, early stopping and the stored model all run
    in inference mode, so they need the recalibrated statistics.
    """
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:  # VGG16
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), batch_size), start=1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / k  # a running mean over the chunks
            model(images[start : start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def _batch_norm_callback(images: np.ndarray, batch_size: int) -> Any:
    """Recalibrates before every validation pass of `fit` (and hence before early stopping)."""
    import keras

    class RecalibrateBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            recalibrate_batch_norm(self.model, images, batch_size)

    return RecalibrateBatchNorm()


def run_trial(
    architecture: str,
    data: TrainingData,
    config: CtTrainConfig,
    report: Reporter = UNWATCHED,
) -> TrialResult:
    """Train and evaluate one backbone; deterministic for the config's seed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _limit_threads(config.cpus_per_trial)
    import keras

    keras.utils.set_random_seed(config.seed)
    weights = None
    if config.weights == "imagenet":
        weights = imagenet_weights(
            ARCHITECTURES[architecture],
            config.image_size,
            config.mobilenet_alpha,
            config.imagenet_weights_dir,
        )
    model = build_classifier(
        architecture,
        config.image_size,
        len(data.classes),
        weights=weights,
        alpha=config.mobilenet_alpha,
        l2=config.l2,
        bn_momentum=config.bn_momentum,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.adam_learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=config.run_eagerly,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    started_at = time.time()
    started = time.perf_counter()
    history = model.fit(
        data.train_images,
        data.train_labels,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(data.validation_images, data.validation_labels),
        # Recalibration first: early stopping must judge (and keep) calibrated weights.
        callbacks=[
            _batch_norm_callback(data.calibration_images, config.batch_size),
            stop,
            *report.keras_callbacks(config.epochs, part=architecture),
        ],
        shuffle=True,
        verbose=0,
    )
    train_seconds = time.perf_counter() - started
    epochs_run = len(history.history["loss"])
    # Early stopping may end the part before its last epoch: it is complete all the same.
    report("epochs", part=architecture, completed=epochs_run, total=epochs_run)
    finished_at = time.time()
    validation = np.asarray(model.predict(data.validation_images, verbose=0))
    test = np.asarray(model.predict(data.test_images, verbose=0))
    return TrialResult(
        architecture=architecture,
        validation_accuracy=float(np.mean(validation.argmax(1) == data.validation_labels)),
        validation_auroc=_auroc(data.validation_labels, validation),
        test_accuracy=float(np.mean(test.argmax(1) == data.test_labels)),
        test_auroc=_auroc(data.test_labels, test),
        parameters=int(model.count_params()),
        epochs_run=epochs_run,
        train_seconds=train_seconds,
        started_at=started_at,
        finished_at=finished_at,
        cpu_latency_ms=_latency_ms(model, data.test_images[:1]),
        keras_model=_model_bytes(model),
    )


def _latency_ms(model: Any, image: np.ndarray) -> float:
    """Median single-slice latency of `predict_on_batch` (compiled; no `predict` loop)."""
    model.predict_on_batch(image)  # trace once
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        model.predict_on_batch(image)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def _model_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / KERAS_FILE
        model.save(path)
        return path.read_bytes()


def run_trials(
    data: TrainingData, config: CtTrainConfig, report: Reporter = UNWATCHED
) -> list[TrialResult]:
    """Every architecture: as parallel Ray tasks when Ray is up, else one after another."""
    import ray

    for name in config.architectures:  # every part's count, before any starts
        report("epochs", part=name, total=config.epochs)
    if not ray.is_initialized():
        return [run_trial(name, data, config, report) for name in config.architectures]
    # One process per trial (max_calls=1): TF's thread pools are fixed per process, and the
    # memory of a finished backbone goes back to the node.
    remote = ray.remote(max_calls=1)(run_trial).options(num_cpus=config.cpus_per_trial)
    data_ref = ray.put(data)
    return ray.get([remote.remote(name, data_ref, config, report) for name in config.architectures])


def select_winner(results: list[TrialResult]) -> TrialResult:
    """The source's rule: best validation accuracy, ties broken by the fewest parameters."""
    return min(results, key=lambda r: (-r.validation_accuracy, r.parameters))


def comparison_table(results: list[TrialResult], winner: TrialResult) -> str:
    """The architectures side by side, as markdown (saved with the model and printed)."""

    def auroc(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        "| architecture | val accuracy | val AUROC | test accuracy | test AUROC | parameters "
        "| epochs | train s | CPU latency ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (-r.validation_accuracy, r.parameters)):
        mark = " (chosen)" if r is winner else ""
        lines.append(
            f"| {r.architecture}{mark} | {r.validation_accuracy:.3f} | "
            f"{auroc(r.validation_auroc)} | {r.test_accuracy:.3f} | {auroc(r.test_auroc)} | "
            f"{r.parameters:,} | {r.epochs_run} | {r.train_seconds:.0f} | "
            f"{r.cpu_latency_ms:.1f} |"
        )
    return "\n".join(lines)


def train(
    config: CtTrainConfig | None = None, progress: ProgressCallback | None = None
) -> CtTrainResult:
    """Load (or generate) slices, run the trials, store the winner with its ONNX twin."""
    import keras

    config = config or CtTrainConfig()
    report = Reporter(MODEL_NAME, progress)
    report("slices (synthetic ones are generated once, then cached)")
    window = Window()
    root = dataset_root(config)
    slices, skipped = load_slices(root, config.image_size, window)
    data, counts, train_originals = prepare(slices, config)
    results = run_trials(data, config, report)
    report("ONNX export and saving")
    winner = select_winner(results)
    table = comparison_table(results, winner)
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / KERAS_FILE
        keras_path.write_bytes(winner.keras_model)
        model = keras.models.load_model(keras_path)
        onnx_path = Path(tmp) / ONNX_FILE
        export_onnx(model, onnx_path, config.image_size)
        gap = onnx_gap(model, onnx_path, data.test_images)
        if gap > ONNX_EQUALITY_TOLERANCE:
            raise RuntimeError(f"ONNX probabilities differ from Keras by {gap:.2e}")
        metrics = _metrics(winner, gap, counts)
        reference = _reference(model, train_originals, window)
        metadata = _metadata(config, metrics, winner, slices, root)
        card = metadata | {
            "comparison": [r.model_dump() for r in results],
            "comparison_table": table,
            "split_counts": counts,
            "skipped_files": [s.model_dump() for s in skipped],
        }
        tag = MODEL_NAME if config.version is None else f"{MODEL_NAME}:{config.version}"
        with model_store.create_model(tag, metadata, card, reference) as stored:
            folder = Path(stored.path)
            (folder / KERAS_FILE).write_bytes(winner.keras_model)
            (folder / ONNX_FILE).write_bytes(onnx_path.read_bytes())
            (folder / "comparison.md").write_text(table + "\n")
    return CtTrainResult(tag=str(stored.tag), metrics=metrics, report=table)


def _metrics(winner: TrialResult, gap: float, counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": winner.test_accuracy,
        "roc_auc": winner.test_auroc,
        "validation_accuracy": winner.validation_accuracy,
        "validation_auroc": winner.validation_auroc,
        "parameters": winner.parameters,
        "n_train": counts["train"],
        "n_validation": counts["validation"],
        "n_test": counts["test"],
        "onnx_keras_max_gap": gap,
    }


def _reference(model: Any, train: SliceSet, window: Window) -> Any:
    """Drift reference from the un-augmented training slices and the winner's scores on them."""
    probabilities = np.asarray(model.predict(train.images, verbose=0))
    scores = probabilities[:, -1]
    return build_reference(
        drift_features(train.images, window),
        DRIFT_FEATURES,
        set(),
        scores,
        probabilities.argmax(1) == probabilities.shape[1] - 1,
    )


def _metadata(
    config: CtTrainConfig,
    metrics: dict[str, Any],
    winner: TrialResult,
    slices: SliceSet,
    root: Path,
) -> dict[str, Any]:
    import keras

    params = config.model_dump(mode="json", exclude={"data_dir", "imagenet_weights_dir"})
    params["learning_rate"] = config.adam_learning_rate  # the rate used, when left unset
    return {
        # BentoML metadata holds no None: unset values are left out.
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float | int)},
        "params": {k: v for k, v in params.items() if v is not None},
        "architecture": winner.architecture,
        "image_size": config.image_size,
        "classes": list(slices.classes),
        "data_source": "synthetic" if config.data_dir is None else "folder",
        "dataset_folder": root.name,
        "training_data_sha256": slices.sha256(),
        "medserve_version": version("medserve"),
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
    }
