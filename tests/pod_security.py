"""The restricted Pod Security Standard
(kubernetes.io/docs/concepts/security/pod-security-standards), checked on rendered pod templates
of the chart and of k8s/."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def restricted_violations(
    pod: dict[str, Any], extra_contexts: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """Breaches of the restricted Pod Security Standard, plus our read-only root filesystem, in a
    pod template (`{"spec": ...}`); `extra_contexts` are security contexts of containers KubeRay
    adds (the autoscaler)."""
    spec = pod["spec"]
    found = []
    pod_security = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            found.append(flag)
    if any("hostPath" in v for v in spec.get("volumes", [])):
        found.append("hostPath volume")
    if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        found.append("pod seccompProfile")
    every = spec["containers"] + spec.get("initContainers", [])
    contexts = [c.get("securityContext", {}) for c in every] + list(extra_contexts)
    for context in contexts:
        if not (context.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            found.append("runAsNonRoot")
        if 0 in (context.get("runAsUser"), pod_security.get("runAsUser")):
            found.append("runAsUser 0")
        if context.get("privileged"):
            found.append("privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append("allowPrivilegeEscalation")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            found.append("capabilities not dropped")
        if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append("capabilities added")
        if context.get("readOnlyRootFilesystem") is not True:
            found.append("writable root filesystem")
    return found
