"""The shipped generators, each run through the plugin test helper exactly as an outside author would test theirs."""

from __future__ import annotations

import itertools
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from delivery_daemon_plugins.command import CommandGenerator
from delivery_daemon_plugins.download import DownloadGenerator, verify_link
from delivery_daemon_plugins.http import HttpGenerator
from delivery_daemon_plugins.pattern import UNAMBIGUOUS, PatternGenerator, luhn_valid
from delivery_daemon_plugins.signed import SignedGenerator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.config import SecuritySettings
from delivery_daemon.errors import ConfigError, Dead, OutOfStock, Retry
from delivery_daemon.generators.licence import LicenseError, generate_keypair, load_public_key, verify
from delivery_daemon.http.serving import serve
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.testing import arun_generator, build_generator, fake_order, fake_revocation, run_generator

# -- pattern ----------------------------------------------------------------------------------------------------


def test_pattern_groups_prefix_and_charset() -> None:
    """pattern builds prefix + groups of the charset joined by the separator."""
    result = run_generator(
        PatternGenerator, {"groups": 3, "group_length": 4, "charset": "AB", "prefix": "P-"}, quantity=5
    )
    assert len(set(result.keys)) == 5
    for key in result.keys:
        prefix, body = key[:2], key[2:]
        assert prefix == "P-"
        assert [len(group) for group in body.split("-")] == [4, 4, 4]
        assert set(body.replace("-", "")) <= {"A", "B"}


@pytest.mark.parametrize("charset", [UNAMBIGUOUS, "0123456789", "ABCDEFGH"])
def test_pattern_luhn_check_character_catches_typos(charset: str) -> None:
    """check: luhn rejects every single-character typo (and, for odd-sized charsets, every adjacent swap)."""
    keys = run_generator(PatternGenerator, {"check": "luhn", "charset": charset}, quantity=20).keys
    assert all(luhn_valid(key, charset) for key in keys)
    key = keys[0]
    positions = [i for i, ch in enumerate(key) if ch in charset]
    for i in positions:
        for other in charset.replace(key[i], ""):
            assert not luhn_valid(key[:i] + other + key[i + 1 :], charset)
    for i, j in itertools.pairwise(positions):
        if len(charset) % 2 and key[i] != key[j] and j == i + 1:
            assert not luhn_valid(key[:i] + key[j] + key[i] + key[j + 1 :], charset)


def test_pattern_rejects_guessable_shapes_with_key_path() -> None:
    """Too few random symbols is a config error naming the option."""
    with pytest.raises(ConfigError, match=r"options\.pattern: needs at least 8"):
        run_generator(PatternGenerator, {"pattern": "XXXX-1234"})
    with pytest.raises(ConfigError, match=r"options\.group_length: .*at least 8"):
        run_generator(PatternGenerator, {"groups": 2, "group_length": 3})


# -- signed -----------------------------------------------------------------------------------------------------


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    generate_keypair(private, public)
    return private, public


def test_signed_keys_verify_offline_with_payload(keypair: tuple[Path, Path]) -> None:
    """signed issues one Ed25519 key per seat carrying product, order, seat, quantity, issued-at and expiry."""
    private, public = keypair
    clock = ManualClock(1_800_000_000)
    order = fake_order(quantity=2, order_id="o-42", product_id="pro")
    keys = run_generator(
        SignedGenerator, {"private_key_file": str(private), "expires_days": 30}, order=order, clock=clock
    ).keys
    assert all(key.startswith("key/") for key in keys)
    payloads = [verify(key, load_public_key(public), now=clock.now()) for key in keys]
    assert [(p.product, p.order, p.index, p.quantity) for p in payloads] == [
        ("pro", "o-42", 1, 2),
        ("pro", "o-42", 2, 2),
    ]
    assert payloads[0].expires_at == 1_800_000_000 + 30 * 86400
    with pytest.raises(LicenseError, match="expired"):
        verify(keys[0], load_public_key(public), now=clock.now() + 31 * 86400)


def test_signed_key_altered_or_foreign_is_rejected(keypair: tuple[Path, Path], tmp_path: Path) -> None:
    """A key with a changed payload, or checked with another public key, fails verification."""
    private, public = keypair
    key = run_generator(SignedGenerator, {"private_key_file": str(private)}).keys[0]
    signed, signature = key.rsplit(".", 1)
    forged = signed[:-2] + ("AA" if signed[-2:] != "AA" else "BB") + "." + signature
    with pytest.raises(LicenseError, match="invalid signature"):
        verify(forged, load_public_key(public), now=0)
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    with pytest.raises(LicenseError, match="invalid signature"):
        verify(key, load_public_key(tmp_path / "other.pub"), now=0)


def test_signed_missing_private_key_is_config_error(tmp_path: Path) -> None:
    """A private key file that does not exist is reported at start-up with its key path."""
    with pytest.raises(ConfigError, match=r"options\.private_key_file: cannot read"):
        run_generator(SignedGenerator, {"private_key_file": str(tmp_path / "nope.pem")})


def test_keys_generate_and_license_verify_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys generate writes a 0600 private key (never overwritten); license verify accepts a genuine key only."""
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert main(["keys", "generate", "--private-key", str(private), "--public-key", str(public)]) == 0
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert main(["keys", "generate", "--private-key", str(private), "--public-key", str(public)]) == 2
    key = run_generator(SignedGenerator, {"private_key_file": str(private)}, clock=ManualClock(0)).keys[0]
    capsys.readouterr()
    assert main(["license", "verify", key, "--public-key", str(public)]) == 0
    assert '"seat": 1' in capsys.readouterr().out
    assert main(["license", "verify", key[:-3] + "abc", "--public-key", str(public)]) == 1
    assert capsys.readouterr().out.startswith("invalid:")


def test_documented_verification_snippet_accepts_a_key(keypair: tuple[Path, Path]) -> None:
    """The verifier printed in docs/plugins.md, pasted as is, verifies a key and rejects a tampered one."""
    private, public = keypair
    docs = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    snippet = docs.split("<!-- verify-snippet -->", 2)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "snippet", "exec"), namespace)
    key = run_generator(SignedGenerator, {"private_key_file": str(private)}, clock=ManualClock(0)).keys[0]
    assert namespace["verify_license"](key, public.read_bytes())["o"] == "order-1"
    assert namespace["verify_license"](key[:-4] + "AAAA", public.read_bytes()) is None


# -- download ---------------------------------------------------------------------------------------------------

SECRET = "s3cret-s3cret-s3cret"


def test_download_signed_link_expires() -> None:
    """download returns an HTTPS link signed with HMAC that verifies until ttl_seconds have passed, and no keys."""
    clock = ManualClock(1_000_000)
    result = run_generator(
        DownloadGenerator,
        {"base_url": "https://files.example.com/dl", "file": "app.zip", "secret": SECRET, "ttl_seconds": 3600},
        quantity=2,
        clock=clock,
    )
    assert result.keys == () and result.download is not None
    assert result.download.startswith("https://files.example.com/dl/app.zip?")
    assert verify_link(result.download, SECRET, now=clock.now() + 3599)
    assert not verify_link(result.download, SECRET, now=clock.now() + 3600)
    assert not verify_link(result.download, "another-secret-value", now=clock.now())
    assert not verify_link(result.download.replace("order=order-1", "order=order-2"), SECRET, now=clock.now())


def test_download_static_url_and_option_errors() -> None:
    """A static url is delivered as is; http, both or neither of url/base_url are config errors with key paths."""
    assert (
        run_generator(DownloadGenerator, {"url": "https://cdn.example.com/x.zip"}).download
        == "https://cdn.example.com/x.zip"
    )
    with pytest.raises(ConfigError, match=r"options\.url: .*https"):
        run_generator(DownloadGenerator, {"url": "http://cdn.example.com/x.zip"})
    with pytest.raises(ConfigError, match=r"options\.base_url: set either"):
        run_generator(DownloadGenerator, {})
    with pytest.raises(ConfigError, match=r"options\.secret: required with base_url"):
        run_generator(DownloadGenerator, {"base_url": "https://f.example.com", "file": "a.zip"})


# -- command ----------------------------------------------------------------------------------------------------

PROGRAM = """\
import json, sys
order = json.load(sys.stdin)
mode = sys.argv[1]
if mode == "keys":
    for i in range(order["quantity"]):
        print(f"{order['idempotency_key']}-{i}")
elif mode == "json":
    print(json.dumps({"keys": ["K"] * order["quantity"], "text": "from json"}))
elif mode == "env":
    import os
    print(json.dumps({"keys": ["K"], "text": " ".join(sorted(os.environ))}))
elif mode == "hang":
    import time; time.sleep(60)
else:
    print("nothing left", file=sys.stderr)
    sys.exit(int(mode))
"""


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "keyprog.py"
    path.write_text(PROGRAM)
    return path


def test_command_reads_order_json_and_keys_from_stdout(program: Path) -> None:
    """command sends the order as JSON on stdin and takes one key per line (or a JSON answer) from stdout."""
    keys = run_generator(CommandGenerator, {"argv": [sys.executable, str(program), "keys"]}, quantity=3).keys
    assert keys == ("test-store:order-1-0", "test-store:order-1-1", "test-store:order-1-2")
    result = run_generator(CommandGenerator, {"argv": [sys.executable, str(program), "json"]}, quantity=2)
    assert result.keys == ("K", "K") and result.text == "from json"


@pytest.mark.parametrize(("status", "outcome"), [(69, OutOfStock), (65, Dead), (1, Retry)])
def test_command_exit_status_maps_to_outcome(program: Path, status: int, outcome: type[Exception]) -> None:
    """Exit 69 is out of stock, 65 permanent, anything else retryable, with the program's stderr as reason."""
    with pytest.raises(outcome, match="nothing left"):
        run_generator(CommandGenerator, {"argv": [sys.executable, str(program), str(status)]})


def test_command_child_gets_a_minimal_environment(program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seller's program sees PATH, the locale and its configured env, never the daemon's other variables."""
    monkeypatch.setenv("SOFTSTORE_API_KEY", "daemon-secret-api-key")
    monkeypatch.setenv("DELIVERY_DAEMON_KEYS", "k1:daemon-encryption-key")
    monkeypatch.setenv("LANG", "C.UTF-8")
    options = {"argv": [sys.executable, str(program), "env"], "env": {"KEYGEN_DB": "/var/lib/keygen.db"}}
    seen = set((run_generator(CommandGenerator, options).text or "").split())
    assert {"PATH", "LANG", "KEYGEN_DB"} <= seen
    assert not seen & {"SOFTSTORE_API_KEY", "DELIVERY_DAEMON_KEYS"}
    assert seen <= {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "KEYGEN_DB"} | {
        name for name in seen if name.startswith("LC_")
    }


def test_command_timeout_kills_program(program: Path) -> None:
    """A program that does not answer within timeout is killed and the order retried."""
    with pytest.raises(Retry, match="no answer within"):
        run_generator(CommandGenerator, {"argv": [sys.executable, str(program), "hang"], "timeout": 0.5})


def test_command_missing_program_is_config_error() -> None:
    """A program that is not on disk is reported at start-up with the option's key path."""
    with pytest.raises(ConfigError, match=r"options\.argv: program 'no-such-keyprog' not found"):
        run_generator(CommandGenerator, {"argv": ["no-such-keyprog"]})


# -- http -------------------------------------------------------------------------------------------------------

LOCAL = NetPolicy(allow_private=True)
"""The test key server runs on 127.0.0.1, which the daemon's default policy refuses."""


@pytest.fixture
async def key_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def keys(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.append({"body": body, "headers": dict(request.headers)})
        status = int(request.path_params["status"])
        if status != 200:
            return JSONResponse({"error": "no"}, status_code=status, headers={"Retry-After": "7"})
        return JSONResponse({"keys": [f"H-{i}" for i in range(body["quantity"])], "text": "hi"})

    async with serve(Starlette(routes=[Route("/keys/{status}", keys, methods=["POST"])])) as server:
        yield server.url, seen


async def test_http_posts_order_with_idempotency_key(key_server: tuple[str, list[dict[str, Any]]]) -> None:
    """http POSTs the order JSON with Idempotency-Key and bearer token and returns the server's keys."""
    url, seen = key_server
    result = await arun_generator(
        HttpGenerator, {"url": f"{url}/keys/200", "token": "tok-123456"}, quantity=2, policy=LOCAL
    )
    assert result.keys == ("H-0", "H-1") and result.text == "hi"
    assert seen[0]["headers"]["idempotency-key"] == "test-store:order-1"
    assert seen[0]["headers"]["authorization"] == "Bearer tok-123456"
    assert seen[0]["body"]["order_id"] == "order-1" and "options" not in seen[0]["body"]


@pytest.mark.parametrize(("status", "outcome"), [(409, OutOfStock), (503, Retry), (429, Retry), (400, Dead)])
async def test_http_status_maps_to_outcome(
    key_server: tuple[str, list[dict[str, Any]]], status: int, outcome: type[Exception]
) -> None:
    """409 waits for stock, 429/5xx retry (Retry-After honoured), other statuses are permanent."""
    url, _seen = key_server
    with pytest.raises(outcome) as raised:
        await arun_generator(HttpGenerator, {"url": f"{url}/keys/{status}"}, policy=LOCAL)
    if outcome is Retry:
        assert isinstance(raised.value, Retry) and raised.value.after == 7


async def test_http_unreachable_is_retry_without_url() -> None:
    """A key server that refuses connections is retried; the reason does not repeat the URL."""
    with pytest.raises(Retry) as raised:
        await arun_generator(HttpGenerator, {"url": "http://127.0.0.1:9/keys?token=abc"}, policy=LOCAL)
    assert "token" not in raised.value.reason


async def test_http_refuses_loopback_key_server_by_default(key_server: tuple[str, list[dict[str, Any]]]) -> None:
    """A key server on 127.0.0.1 under the default policy is Dead (permanent) and never contacted."""
    url, seen = key_server
    with pytest.raises(Dead) as raised:
        await arun_generator(HttpGenerator, {"url": f"{url}/keys/200"})
    assert "loopback" in raised.value.reason and seen == []


async def test_http_reaches_key_server_in_allowed_network(key_server: tuple[str, list[dict[str, Any]]]) -> None:
    """A key server on 127.0.0.1 is used when 127.0.0.0/8 is in the policy's allowed networks."""
    url, seen = key_server
    policy = NetPolicy.from_settings(SecuritySettings(allowed_networks=("127.0.0.0/8",)))
    result = await arun_generator(HttpGenerator, {"url": f"{url}/keys/200"}, policy=policy)
    assert result.keys == ("H-0",) and len(seen) == 1


# -- revocation hooks -------------------------------------------------------------------------------------------

REVOKE_PROGRAM = """\
import json, sys
revocation = json.load(sys.stdin)
with open(sys.argv[1], "a") as seen:
    seen.write(json.dumps({"argv": sys.argv[1:], "stdin": revocation}) + "\\n")
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.contract("revoke")
@pytest.mark.parametrize(("status", "outcome"), [(0, None), (65, Dead), (3, Retry)])
async def test_command_revoke_runs_revoke_argv_with_the_revocation_on_stdin(
    tmp_path: Path, status: int, outcome: type[Exception] | None
) -> None:
    """revoke_argv gets the revocation (keys included) as JSON on stdin, never in its arguments; exit 0 is done, 65
    given up, anything else retried; without revoke_argv nothing runs."""
    script, seen = tmp_path / "revoke.py", tmp_path / "seen.jsonl"
    script.write_text(REVOKE_PROGRAM)
    argv = [sys.executable, str(script), str(seen), str(status)]
    generator = build_generator(CommandGenerator, {"argv": [sys.executable, str(script)], "revoke_argv": argv})
    revocation = fake_revocation(keys=("SECRET-KEY-1",), reason="disputed")
    if outcome is None:
        await generator.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, not in the Protocol
    else:
        with pytest.raises(outcome):
            await generator.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, as above
    [call] = [json.loads(line) for line in seen.read_text().splitlines()]
    assert call["stdin"] == revocation.to_dict() and call["stdin"]["keys"] == ["SECRET-KEY-1"]
    assert not any("SECRET-KEY-1" in arg for arg in call["argv"])
    quiet = build_generator(CommandGenerator, {"argv": [sys.executable, str(script)]})
    await quiet.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, as above
    assert len(seen.read_text().splitlines()) == 1


@pytest.mark.contract("revoke")
async def test_http_revoke_posts_the_revocation_to_revoke_url(key_server: tuple[str, list[dict[str, Any]]]) -> None:
    """http POSTs the revocation JSON to revoke_url with the token and Idempotency-Key revoke:<key>; 2xx is done,
    5xx retried, 4xx given up; without revoke_url nothing is sent."""
    url, seen = key_server
    revocation = fake_revocation(reason="refunded", issue=1)
    options = {"url": f"{url}/keys/200", "token": "tok-123456", "revoke_url": f"{url}/keys/200"}
    generator = build_generator(HttpGenerator, options, policy=LOCAL)
    await generator.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, not in the Protocol
    assert seen[0]["body"] == revocation.to_dict()
    assert seen[0]["headers"]["idempotency-key"] == "revoke:test-store:order-1#1"
    assert seen[0]["headers"]["authorization"] == "Bearer tok-123456"
    for status, outcome in ((503, Retry), (404, Dead)):
        failing = build_generator(HttpGenerator, {**options, "revoke_url": f"{url}/keys/{status}"}, policy=LOCAL)
        with pytest.raises(outcome):
            await failing.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, as above
    quiet = build_generator(HttpGenerator, {"url": f"{url}/keys/200"}, policy=LOCAL)
    await quiet.revoke(revocation)  # type: ignore[attr-defined]  # the optional hook, as above
    assert len(seen) == 3
