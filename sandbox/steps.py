"""Plumbing shared by the trusted steps: directories from the environment, the termination
message, and the step's JSON settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT
from lightbox.api.run import (
    INPUT_DIR,
    INPUT_DIR_ENV,
    OUTPUT_DIR,
    OUTPUT_DIR_ENV,
    STUDIES_DIR,
    STUDIES_DIR_ENV,
    TERMINATION_LOG_ENV,
    TERMINATION_LOG_PATH,
    TRUTH_DIR,
    TRUTH_DIR_ENV,
    WORK_DIR,
    WORK_DIR_ENV,
)

_DEFAULTS = {
    STUDIES_DIR_ENV: STUDIES_DIR,
    TRUTH_DIR_ENV: TRUTH_DIR,
    INPUT_DIR_ENV: INPUT_DIR,
    OUTPUT_DIR_ENV: OUTPUT_DIR,
    WORK_DIR_ENV: WORK_DIR,
}


def directory(env_name: str) -> Path:
    return Path(os.environ.get(env_name) or _DEFAULTS[env_name])


def termination_log() -> Path:
    return Path(os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG_PATH)


def write_termination(text: str) -> None:
    data = text.encode()
    if len(data) > TERMINATION_MESSAGE_LIMIT:
        raise ValueError(f"termination message of {len(data)} bytes exceeds {TERMINATION_MESSAGE_LIMIT}")
    try:
        termination_log().write_bytes(data)
    except OSError:
        pass  # outside Kubernetes the default path may not exist; the exit code still tells


def fail(reason: str, message: str, exit_code: int) -> int:
    """Write {"reason", "message"} (message trimmed to fit) and return ``exit_code``."""
    budget = TERMINATION_MESSAGE_LIMIT - len(json.dumps({"reason": reason, "message": ""})) - 16
    if len(message.encode()) > budget:
        message = message.encode()[: budget - 3].decode(errors="ignore") + "..."
    write_termination(json.dumps({"reason": reason, "message": message}))
    return exit_code


def read_json_env(env_name: str) -> dict[str, Any]:
    raw = os.environ.get(env_name, "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{env_name} must hold a JSON object")
    return value
