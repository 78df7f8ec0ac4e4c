# The Ray image every RayJob and the ad-hoc RayCluster run (k8s/base): the same locked
# dependencies as the bento (requirements/bento.txt, exported from uv.lock without dev tooling),
# the training and pipeline code (medserve/, training/, ray_jobs/), the heart data, and the
# system tools the jobs call: tesseract with Portuguese data (the anonymiser's OCR check) and
# wget (KubeRay's default probes on the head and workers use it).
#
# Build for the ARM64 node pool from the repository root (skaffold.yaml does the same):
#   docker buildx build --platform linux/arm64 -f k8s/images/ray.Dockerfile \
#     -t ghcr.io/medserve/medserve-ray:0.1.0 --push .
FROM python:3.11-slim-bookworm

ARG RAY_UID=1000
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-por wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${RAY_UID}" ray \
    && useradd --uid "${RAY_UID}" --gid ray --create-home --home-dir /home/ray ray

COPY requirements/bento.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.txt && rm /tmp/requirements.txt

WORKDIR /opt/medserve
COPY medserve/ medserve/
COPY training/ training/
COPY ray_jobs/ ray_jobs/
COPY data/heart/ data/heart/

# The code runs from /opt/medserve (not installed): medserve/heart/data.py finds the heart table
# next to it (REPO_ROOT/data/heart). The root filesystem is read-only in the pods: state goes to
# the /tmp emptyDir (MEDSERVE_HOME, Ray's /tmp/ray session folder), caches to /home/ray.
ENV PYTHONPATH=/opt/medserve \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDSERVE_HOME=/tmp/medserve \
    HOME=/home/ray \
    MPLCONFIGDIR=/home/ray/.config/matplotlib \
    KERAS_HOME=/home/ray/.keras
USER ${RAY_UID}:${RAY_UID}
