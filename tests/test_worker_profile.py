"""bench/worker_profile.py's bucketing, on collapsed stacks as py-spy writes them: the README's
CT profile figures depend on it."""

from __future__ import annotations

from pathlib import Path

from bench.worker_profile import OTHER, bucket, concern_of, waiting

QUEUE_WAIT = (
    "0x7fa1 (libc.so.6);thread_run (libpython3.11.so.1.0);Thread.run (threading.py:982);"
    "Queue.get (queue.py:171);Condition.wait (threading.py:327);"
    "lock_PyThread_acquire_lock (libpython3.11.so.1.0);"
    "PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7fa2 (libc.so.6)"
)
CHECKPOINT_SLEEP = (
    "SqliteWriters._checkpoint_loop (medserve/prediction_log.py:80);"
    "time_sleep (libpython3.11.so.1.0);clock_nanosleep (libc.so.6)"
)
MODEL = (
    "DataPlane.infer (medserve/serving/dataplane.py:200);"
    "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:266)"
)
BODY = "RequestResponseCycle.receive (uvicorn/protocols/http/httptools_impl.py:570)"


def test_waiting_threads_are_left_out_and_work_goes_to_its_first_concern(tmp_path: Path) -> None:
    assert waiting(QUEUE_WAIT) and waiting(CHECKPOINT_SLEEP)
    assert not waiting(MODEL) and not waiting(BODY)
    # The model call counts as the model even inside the data plane's frames.
    assert concern_of(MODEL).startswith("model call")
    assert concern_of(BODY).startswith("HTTP server")
    assert concern_of("busy (script.py:7)") == OTHER
    raw = tmp_path / "1.txt"
    raw.write_text(f"{QUEUE_WAIT} 900\n{CHECKPOINT_SLEEP} 50\n{MODEL} 30\n{BODY} 10\nbroken\n")
    shares, idle = bucket([raw])
    assert idle == 950
    assert sum(shares.values()) == 40 and shares[concern_of(MODEL)] == 30
