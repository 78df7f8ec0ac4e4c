#!/usr/bin/env bash
# Builds the serving image (ghcr.io/medserve/medserve): `bentoml build` of bentofile.yaml (offline,
# the requirements are locked), then `docker buildx build` of the bento's generated Docker context
# for the target platforms (linux/arm64 for the node pool). skaffold.yaml runs it as a custom
# builder and sets IMAGE, PUSH_IMAGE, PLATFORMS and BUILD_CONTEXT; by hand:
#   IMAGE=REGISTRY/medserve:TAG PUSH_IMAGE=true k8s/images/build-bento.sh
# BENTOML overrides how bentoml is run (default: `uv run --frozen bentoml` when uv is installed).
# MEDSERVE_BUILD_DRY_RUN=1 builds the bento and prints the docker command instead of running it.
set -euo pipefail

: "${IMAGE:?set IMAGE to the full image reference to build}"
platforms="${PLATFORMS:-linux/arm64}"
cd "${BUILD_CONTEXT:-"$(dirname "$0")/../.."}"

# Checked before the bento is built: `--load` takes one platform, a multi-platform image must
# be pushed.
if [[ "${PUSH_IMAGE:-false}" == "true" ]]; then
  output=(--push)
elif [[ "${platforms}" == *,* ]]; then
  echo "a multi-platform image (${platforms}) can only be pushed: set PUSH_IMAGE=true" >&2
  exit 1
else
  output=(--load)
fi

if [[ -n "${BENTOML:-}" ]]; then
  read -r -a bentoml <<<"${BENTOML}"
elif command -v uv >/dev/null; then
  bentoml=(uv run --frozen bentoml)
else
  bentoml=(bentoml)
fi

tag="$(COLUMNS=4096 "${bentoml[@]}" build --output tag . | sed -n 's/^__tag__://p' | tail -n 1)"
if [[ -z "${tag}" ]]; then
  echo "bentoml build printed no tag" >&2
  exit 1
fi
# bentoml prints through rich, which wraps long lines at the terminal width (80 without one).
context="$(COLUMNS=4096 "${bentoml[@]}" get "${tag}" --output path | tr -d '\n')"
if [[ ! -f "${context}/env/docker/Dockerfile" ]]; then
  echo "bento ${tag} has no generated Dockerfile under ${context}" >&2
  exit 1
fi

command=(docker buildx build --platform "${platforms}" --file "${context}/env/docker/Dockerfile"
  --tag "${IMAGE}" "${output[@]}" "${context}")
if [[ -n "${MEDSERVE_BUILD_DRY_RUN:-}" ]]; then
  printf '%q ' "${command[@]}"
  printf '\n'
else
  exec "${command[@]}"
fi
