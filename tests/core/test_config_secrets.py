"""Secrets from files (docs/operations.md, "Secrets from files"): ``${file:/path}``, ``NAME_FILE`` for an unset
``${NAME}`` (Docker secrets), ``${credential:NAME}`` from ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``).
Every error names the key path and the file and never the file's content; a file others may read is warned about."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.config import ReadableSecret, parse_settings
from delivery_daemon.config.secret_files import MAX_BYTES
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.cipher import load_cipher, new_key_line

SECRET = "sk_live_0123456789abcdef"


def _secret_file(directory: Path, name: str = "api_key", text: str = SECRET + "\n", mode: int = 0o600) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return path


def _document(api_key: str, **extra: Any) -> dict[str, Any]:
    return {
        "stores": [
            {
                "name": "main",
                "marketplace": "softstore",
                "api_url": "https://api.example.com/api/v1",
                "api_key": api_key,
                "products": {"p1": {"generator": "pattern"}},
            }
        ],
        **extra,
    }


def _api_key(document: dict[str, Any], environ: dict[str, str], warnings: list[ReadableSecret] | None = None) -> str:
    key = parse_settings(document, environ, warnings).stores[0].api_key
    assert key is not None
    return key.get_secret_value()


def _error(document: dict[str, Any], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(document, environ)
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message
    return message


def test_file_reference_reads_the_file_without_its_trailing_newline(tmp_path: Path) -> None:
    path = _secret_file(tmp_path)
    assert _api_key(_document(f"${{file:{path}}}"), {}) == SECRET
    _secret_file(tmp_path, text=SECRET + "\r\n\n")
    assert _api_key(_document(f"${{file:{path}}}"), {}) == SECRET
    _secret_file(tmp_path, text=" two words \n")  # only newlines are trimmed, the rest is the secret
    assert _api_key(_document(f"prefix-${{file:{path}}}"), {}) == "prefix- two words "


def test_name_file_is_read_when_name_is_unset(tmp_path: Path) -> None:
    """The Docker secrets convention; NAME itself wins when both are set."""
    path = _secret_file(tmp_path)
    assert _api_key(_document("${SOFTSTORE_API_KEY}"), {"SOFTSTORE_API_KEY_FILE": str(path)}) == SECRET
    both = {"SOFTSTORE_API_KEY": "from-env", "SOFTSTORE_API_KEY_FILE": str(path)}
    assert _api_key(_document("${SOFTSTORE_API_KEY}"), both) == "from-env"


def test_credential_reads_the_systemd_credentials_directory(tmp_path: Path) -> None:
    _secret_file(tmp_path, "softstore-api-key", mode=0o400)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    warnings: list[ReadableSecret] = []
    assert _api_key(_document("${credential:softstore-api-key}"), environ, warnings) == SECRET
    assert warnings == []


@pytest.mark.parametrize(
    ("reference", "environ", "expected"),
    [
        (
            "${file:@D/missing}",
            {},
            "stores[0].api_key: cannot read secret file @D/missing (from ${file:@D/missing}): "
            "No such file or directory; expected a readable file holding only the secret",
        ),
        (
            "${file:relative/key}",
            {},
            "stores[0].api_key: secret file relative/key (from ${file:relative/key}) is not an "
            "absolute path; expected an absolute path, e.g. /run/secrets/softstore_api_key",
        ),
        ("${file:@D}", {}, "stores[0].api_key: secret file @D (from ${file:@D}) is not a regular file"),
        (
            "${file:/dev/zero}",
            {},
            "stores[0].api_key: secret file /dev/zero (from ${file:/dev/zero}) is not a regular file",
        ),
        (
            "${file:@D/big}",
            {},
            f"stores[0].api_key: secret file @D/big (from ${{file:@D/big}}) is larger than {MAX_BYTES} bytes",
        ),
        (
            "${file:@D/binary}",
            {},
            "stores[0].api_key: secret file @D/binary (from ${file:@D/binary}) is not UTF-8 text",
        ),
        (
            "${KEY}",
            {"KEY_FILE": "@D/missing"},
            "stores[0].api_key: cannot read secret file @D/missing (from KEY_FILE): No such file or directory",
        ),
        (
            "${KEY}",
            {},
            "stores[0].api_key: environment variable KEY is not set; expected KEY set in the daemon's "
            "environment (systemd EnvironmentFile=, docker --env-file) or KEY_FILE naming a file that "
            "holds it, e.g. KEY=<value>",
        ),
        (
            "${credential:api-key}",
            {},
            "stores[0].api_key: ${credential:api-key}: CREDENTIALS_DIRECTORY is not set "
            "(systemd sets it for a unit with LoadCredential= or SetCredential=); expected "
            "LoadCredential=api-key:/etc/delivery-daemon/credentials/api-key in the unit",
        ),
        (
            "${credential:missing}",
            {"CREDENTIALS_DIRECTORY": "@D"},
            "stores[0].api_key: cannot read secret file @D/missing (from ${credential:missing}): No such file",
        ),
        (
            "${credential:..}",
            {"CREDENTIALS_DIRECTORY": "@D"},
            "stores[0].api_key: ${credential:..}: not a credential name",
        ),
        (
            "${file:}",
            {},
            "stores[0].api_key: malformed reference; expected ${NAME} (NAME of letters, digits and _, not "
            "starting with a digit), ${file:/path} or ${credential:NAME}",
        ),
    ],
)
def test_errors_name_the_key_and_the_file_never_the_content(
    tmp_path: Path, reference: str, environ: dict[str, str], expected: str
) -> None:
    (tmp_path / "big").write_text(SECRET * (MAX_BYTES // len(SECRET) + 1))
    (tmp_path / "binary").write_bytes(SECRET.encode() + b"\xff\xfe\n")
    fill = {k: v.replace("@D", str(tmp_path)) for k, v in environ.items()}
    assert _error(_document(reference.replace("@D", str(tmp_path))), fill).startswith(
        expected.replace("@D", str(tmp_path))
    )


def test_a_value_from_a_file_is_not_repeated_in_a_validation_error(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "port", text=SECRET + "\n")
    message = _error(_document("k" * 20, server={"port": f"${{file:{path}}}"}), {})
    assert message.startswith("server.port: got text (from ${")


def test_a_secret_file_others_may_read_is_used_with_a_warning(tmp_path: Path) -> None:
    """Warned, not refused: Docker mounts secrets 0444 by default. Files in the credentials directory are not
    warned about (a private mount)."""
    path = _secret_file(tmp_path, mode=0o644)
    warnings: list[ReadableSecret] = []
    assert _api_key(_document(f"${{file:{path}}}"), {}, warnings) == SECRET
    assert warnings == [ReadableSecret("stores[0].api_key", str(path), 0o644)]
    assert str(warnings[0]) == (
        f"stores[0].api_key: secret file {path} is readable by other users (mode 0644); "
        f"chmod 0600 (or 0640 with the daemon's group) {path}"
    )
    _secret_file(tmp_path, mode=0o640)
    warnings.clear()
    assert _api_key(_document(f"${{file:{path}}}"), {}, warnings) == SECRET and warnings == []
    _secret_file(tmp_path, mode=0o644)
    assert _api_key(_document("${credential:api_key}"), {"CREDENTIALS_DIRECTORY": str(tmp_path)}, warnings) == SECRET
    assert warnings == []


def test_check_config_reports_the_readable_file_and_never_its_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _secret_file(tmp_path, mode=0o644)
    config = tmp_path / "config.yaml"
    document = _document(f"${{file:{path}}}", database={"url": f"sqlite:///{tmp_path / 'd.db'}"})
    config.write_text(yaml.safe_dump(document))
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"  warning: stores[0].api_key: secret file {path} is readable by other users (mode 0644)" in out
    assert SECRET not in out


def test_encryption_key_env_file(tmp_path: Path) -> None:
    """security.encryption_key_env's NAME_FILE: a key file under the key file's rule (owner-only)."""
    line = new_key_line()
    keys = _secret_file(tmp_path, "keys", text=line + "\n")
    cipher = load_cipher(_security("DD_KEYS"), None, environ={"DD_KEYS_FILE": str(keys)})
    assert cipher is not None and cipher.current == line.split(":")[0]
    os.chmod(keys, 0o644)
    with pytest.raises(ConfigError, match=r"^security.encryption_key_env: .*keys is readable by other users"):
        load_cipher(_security("DD_KEYS"), None, environ={"DD_KEYS_FILE": str(keys)})


def _security(env: str) -> Any:
    from delivery_daemon.config import SecuritySettings

    return SecuritySettings(encryption_key_env=env)


def test_serve_uses_file_secrets_and_logs_a_readable_one(tmp_path: Path) -> None:
    """A real ``serve``: the secret comes from NAME_FILE, the readable file is logged as
    ``config.secret_file_readable`` (key path, file, mode) and the secret itself appears nowhere."""
    from tests.support.serve_process import serve_once

    path = _secret_file(tmp_path, mode=0o644)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            _document(
                "${DD_TEST_API_KEY}",
                database={"url": f"sqlite:///{tmp_path / 'd.db'}"},
                server={"host": "127.0.0.1", "port": 0},
            )
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "DD_TEST_API_KEY"}
    code, events, err = serve_once(config, expect_start=True, env={**env, "DD_TEST_API_KEY_FILE": str(path)})
    assert code == 0, err
    readable = [e for e in events if e["event"] == "config.secret_file_readable"]
    assert [(e["key"], e["file"], e["mode"], e["level"]) for e in readable] == [
        ("stores[0].api_key", str(path), "0644", "warning")
    ]
    assert SECRET not in err and not any(SECRET in str(e) for e in events)
