"""Throwaway: serve a tiny pipeline with MLServer and load it with wrk."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bench.loadgen import markdown_table, process_tree_rss_mb, run_wrk, warmup
from bench.mlserver_peer import (
    DEFAULT_ROOT,
    ensure_mlserver_venv,
    free_port,
    serve_mlserver,
    v2_request_body,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(400, 13))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)
exe = ensure_mlserver_venv(DEFAULT_ROOT)
body = v2_request_body(X[:1].tolist())
configs = [None, 2, *([int(a) for a in sys.argv[1:]])]
rows = []
with tempfile.TemporaryDirectory() as tmp:
    model_path = Path(tmp, "model.joblib")
    joblib.dump(model, model_path)
    for workers in configs:
        workdir = Path(tmp, f"ms-{workers}")
        with serve_mlserver(model_path, workdir, free_port(), free_port(), workers, exe) as url:
            infer = f"{url}/v2/models/heart_risk/infer"
            req = urllib.request.Request(infer, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req) as resp:
                answer = json.loads(resp.read())
            print(workers, json.dumps(answer["outputs"]))
            probs = answer["outputs"][0]["data"]
            assert answer["outputs"][0]["name"] == "predict_proba" and len(probs) == 2
            assert abs(sum(probs) - 1) < 1e-9, probs
            warmup(infer, body, "application/json", 2)
            r = run_wrk(infer, body, "application/json", connections=16, duration_s=5)
            rss = process_tree_rss_mb(int((workdir / "mlserver.pid").read_text()))
            rows.append(
                {
                    "parallel_workers": "default" if workers is None else workers,
                    "rps": r.rps,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "errors": r.errors,
                    "client_cpu_s": r.client_cpu_seconds,
                    "requests": r.requests,
                    "rss_mb": " + ".join(f"{v:.0f}" for v in rss.values()),
                    "rss_total_mb": sum(rss.values()),
                }
            )
print(markdown_table(rows))
