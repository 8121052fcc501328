"""The bundle's settings are documented where a user looks, and reach the containers: every
variable the compose file reads and every setting the entrypoint reads is in .env.example, and
the env file reaches the app's containers whole."""

from __future__ import annotations

import re
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[2] / "orangescrum-ee"
# Set by doit or by the compose file itself, never by a user: the live state a restore
# switches (VOLUME_*), the env file's own path, compose's project name.
NOT_USER_SETTINGS = {"COMPOSE_PROJECT_NAME", "APP_ENV_FILE"}
# What the entrypoint reads that is the image's or a service's, not the env file's: where the
# binary and the facts are (the Dockerfile), the role of each service (the compose file), and
# the binary's own variables.
ENTRYPOINT_INTERNAL = {
    "APP_BIN", "ENTRYPOINT_LIB", "APP_FACTS", "FACTS_PHP", "TMPDIR", "APP_ROLE", "APP_JOB",
    "QUEUE_WORKER", "ENTRYPOINT_LIB_ONLY", "NO_COLOR", "SERVER_PORT", "SEED_SENTINEL_TABLE",
    "APP_VERSION",
}  # fmt: skip


def documented() -> set[str]:
    """NAME=… lines of .env.example, commented out or not."""
    text = (BUNDLE / ".env.example").read_text()
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.M))


def compose_variables() -> set[str]:
    """Every ${NAME…} the compose file interpolates ($$ escapes a shell's own)."""
    text = (BUNDLE / "docker-compose.yaml").read_text().replace("$$", "")
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def entrypoint_settings() -> set[str]:
    """Settings the entrypoint takes from its environment: those it defaults or checks."""
    text = (BUNDLE / "entrypoint.sh").read_text() + (BUNDLE / "entrypoint-lib.sh").read_text()
    defaulted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-+]", text))
    checked = set(re.findall(r"for name in ((?:[A-Z][A-Z0-9_]* ?)+); do", text))
    return defaulted | {n for group in checked for n in group.split()}


def test_every_variable_the_compose_file_reads_is_documented() -> None:
    volumes = {n for n in compose_variables() if n.startswith("VOLUME_")}
    missing = compose_variables() - documented() - NOT_USER_SETTINGS - volumes
    assert not missing, f"not in .env.example: {sorted(missing)}"


def test_every_setting_the_entrypoint_reads_is_documented() -> None:
    missing = (
        entrypoint_settings() - documented() - ENTRYPOINT_INTERNAL - {"FACT_APP_LOOPBACK_PORT"}
    )
    missing = {n for n in missing if not n.startswith("FACT_")}
    assert not missing, f"read by the entrypoint, not in .env.example: {sorted(missing)}"


def test_the_env_file_reaches_every_app_container_whole() -> None:
    """The app reads its own settings (mail, storage…) with env(): the compose file hands the
    user's env file to its containers (env_file) rather than listing each name."""
    text = (BUNDLE / "docker-compose.yaml").read_text()
    anchor = text.split("x-app: &app", 1)[1].split("\nservices:", 1)[0]
    assert "env_file:" in anchor and "${APP_ENV_FILE:-.env}" in anchor
    for service in ("orangescrum-app", "orangescrum-scheduler", "orangescrum-queue"):
        block = text.split(f"  {service}:\n", 1)[1].split("\n  orangescrum-", 1)[0]
        assert "<<: *app" in block, service


def test_the_documented_values_are_the_defaults_the_compose_file_uses() -> None:
    """A user who copies .env.example and fills in the change-me values gets what the compose
    file would do with the line absent (no surprise in either direction)."""
    example = dict(
        re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (BUNDLE / ".env.example").read_text(), re.M)
    )
    text = (BUNDLE / "docker-compose.yaml").read_text()
    defaults = dict(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}$]*)\}", text))
    differ = {
        name: (example[name], value)
        for name, value in defaults.items()
        if name in example and value and example[name] != value and "change-me" not in example[name]
    }
    allowed = {"DB_IMAGE", "APP_URL", "APP_BIND"}  # examples of a real deployment
    assert set(differ) <= allowed, differ
