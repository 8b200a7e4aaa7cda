"""The Docker image's build context: its files alone build an installable wheel that carries the model.

No Docker engine runs on CI machines, so the image itself cannot be built here; this checks what the
Dockerfile relies on: the files it copies are enough for `pip install .`, the wheel ships the default
model under `lichang/`, nothing lands in site-packages under a generic top-level name, and the image
runs as a non-root user with a health check and the base encoder built at build time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lichang.config import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _copied_sources() -> list[str]:
    sources = []
    for line in DOCKERFILE.splitlines():
        match = re.match(r"\s*COPY\s+(?!--)(.+?)\s+\S+\s*$", line)
        if match:
            sources += match.group(1).split()
    return sources


def test_dockerfile_runs_as_non_root_with_health_check_and_prebuilt_encoder():
    assert re.search(r"^USER\s+(?!root\b)\w+", DOCKERFILE, re.M), "the image must not run as root"
    assert re.search(r"^HEALTHCHECK .*?/readyz", DOCKERFILE, re.M | re.S)
    assert "resolve_encoder()" in DOCKERFILE, "the base encoder must be converted at image build time"
    assert re.search(r'^CMD \["lichang", "serve"\]', DOCKERFILE, re.M)
    assert "torch==2.13.0" in DOCKERFILE and "whl/cpu" in DOCKERFILE, "the image must install the CPU build"


@pytest.mark.slow
def test_dockerfile_context_builds_a_wheel_with_the_default_model(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    sources = _copied_sources()
    assert {"pyproject.toml", "lichang", "models", "service"} <= set(sources)
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, context / source)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(context)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("lichang-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"lichang"}, f"generic top-level names in the wheel: {top_level - {'lichang'}}"
    for path in DEFAULT_MODEL_DIR.iterdir():
        assert f"lichang/models/default/{path.name}" in names
    for module in ("lichang/service/app.py", "lichang/training/trainer.py", "lichang/eval/evaluate.py",
                   "lichang/service/batch/__init__.py", "lichang/models/base_encoder.py"):
        assert module in names
