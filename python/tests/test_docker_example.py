"""What the FastAPI Docker example (examples/fastapi) runs, without Docker: the application as its
compose file configures it, and the image's health check against it; and every file its
Dockerfile copies exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import REPO

EXAMPLE = REPO / "examples" / "fastapi"


def healthcheck_command() -> list:
    """The image's HEALTHCHECK command, as Docker would run it (with this test's Python)."""
    text = (EXAMPLE / "Dockerfile").read_text()
    command = json.loads(text.split("CMD [", 1)[1].split("\n", 1)[0].rsplit("]", 1)[0].join("[]"))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_example_app_caches_with_the_compose_environment_and_passes_its_health_check(serve, client, redis_url) -> None:
    env = {"CACHE_BACKEND": "redis", "REDIS_URL": redis_url, "REDIS_MAX_CONNECTIONS": "20"}
    app = serve("main:app", env=env, cwd=EXAMPLE)
    first, second = client.get(f"{app.url}/"), client.get(f"{app.url}/")
    assert first.json() == second.json() == {"Hello": "World"}
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    health = client.get(f"{app.url}/health")
    assert health.status_code == 200 and "x-cache" not in health.headers
    command = [part.replace("127.0.0.1:8000", f"127.0.0.1:{app.port}") for part in healthcheck_command()]
    assert subprocess.run(command, timeout=30).returncode == 0
    app.stop()
    assert subprocess.run(command, timeout=30, capture_output=True).returncode != 0, "a check that cannot fail checks nothing"


def test_every_file_the_dockerfiles_copy_exists() -> None:
    for dockerfile in (EXAMPLE / "Dockerfile", REPO / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words[:1] != ["COPY"] or any(w.startswith("--from") for w in words):
                continue
            for source in words[1:-1]:
                assert (REPO / source).exists(), f"{dockerfile.relative_to(REPO)} copies {source}, which does not exist"
    required = [line.split(">")[0].strip() for line in (EXAMPLE / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert required == ["fastapi", "uvicorn"], "the guide's requirements; the package comes from the built wheel"
