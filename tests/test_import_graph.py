"""The project's import graph has no cycle, and the serving layer's adapters sit on its core."""

from __future__ import annotations

import ast

import pytest

from tests.import_graph import ROOT, cycles, import_graph


def test_the_project_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


CORE = ("dataplane", "model", "tensors", "batching", "errors", "metrics")
ADAPTERS = ("http_api", "oip_rest", "oip_grpc", "oip", "service")


@pytest.mark.parametrize("core", CORE)
def test_the_serving_core_imports_no_adapter(core: str) -> None:
    graph = import_graph()
    adapters = {f"medserve.serving.{name}" for name in ADAPTERS}
    assert not graph[f"medserve.serving.{core}"] & adapters


@pytest.mark.parametrize("transport", ["starlette", "grpc", "tritonclient"])
def test_the_transport_free_modules_import_no_transport(transport: str) -> None:
    for name in (*CORE, "oip"):
        source = (ROOT / "medserve" / "serving" / f"{name}.py").read_text()
        tree = ast.parse(source)
        roots = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        assert transport not in roots, f"medserve/serving/{name}.py imports {transport}"
