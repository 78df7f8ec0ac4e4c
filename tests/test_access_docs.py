"""The README's access-control table is the code's: every route of every service with its role,
and every gRPC method (rendered here from `HttpRoute.role` and `auth.roles`; a drift fails)."""

from __future__ import annotations

import importlib
import re
from collections import defaultdict
from pathlib import Path

from medserve.auth.roles import GRPC_METHOD_ROLES, GRPC_OPEN_PREFIXES, ROLE_PURPOSE, Role
from medserve.catalogue import SERVICES

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- access-table:start -->", "<!-- access-table:end -->"


def rendered_table() -> str:
    services_of: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for model, entry in SERVICES.items():
        module = importlib.import_module(entry.target.split(":")[0])
        for route in module.http.routes:
            role = route.role.value if route.role else "none (open)"
            services_of[(route.path, ", ".join(route.methods), role)].append(model)
    every = len(SERVICES)
    lines = ["| HTTP route | methods | role | services |", "|---|---|---|---|"]
    for (path, methods, role), models in services_of.items():
        where = "all" if len(models) == every else ", ".join(models)
        lines.append(f"| `{path}` | {methods} | {role} | {where} |")
    lines += ["", "| gRPC method | role |", "|---|---|"]
    lines += [f"| `{m}` | {r.value} |" for m, r in GRPC_METHOD_ROLES.items()]
    lines += [f"| `{prefix}*` | none (open) |" for prefix in GRPC_OPEN_PREFIXES]
    lines += ["", "| role | lets a caller |", "|---|---|"]
    lines += [f"| `{role.value}` | {ROLE_PURPOSE[role]} |" for role in Role]
    return "\n".join(lines)


def test_readme_access_table_is_the_codes() -> None:
    text = README.read_text()
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match, f"README lacks the {START} ... {END} block"
    expected = rendered_table()
    assert match.group(1) == expected, f"README's table is stale; it should read:\n{expected}"


def test_every_protected_route_has_a_role_and_only_probes_are_open() -> None:
    for entry in SERVICES.values():
        module = importlib.import_module(entry.target.split(":")[0])
        open_paths = {r.path for r in module.http.routes if r.role is None}
        assert open_paths == {
            "/metrics",
            "/v2/health/live",
            "/v2/health/ready",
            "/openapi.json",
            "/docs",
        }
