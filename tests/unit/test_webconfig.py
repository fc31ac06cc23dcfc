"""The web configuration file (TLS, basic auth): validation errors and the authenticator."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path

import bcrypt
import pytest

from daemon.webconfig import Authenticator, WebConfigError, WebConfigHolder, load_web_config
from tests.tlsfiles import make_ca, make_leaf

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    ca, ca_key = make_ca(tmp_path)
    make_leaf(tmp_path, ca, ca_key, "server")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "web.yaml"
    path.write_text(text)
    return path


def error(path: Path) -> str:
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    return str(info.value)


def test_full_file_with_relative_paths(tls_dir: Path) -> None:
    path = write(
        tls_dir,
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: VerifyClientCertIfGiven
  client_ca_file: test-ca.crt
  min_version: TLS13
basic_auth_users:
  prometheus: {HASH}
http_server_config:
  headers: {{X-Frame-Options: deny}}
""",
    )
    cfg = load_web_config(path)
    assert cfg.tls is not None
    assert cfg.tls.minimum_version is ssl.TLSVersion.TLSv1_3
    assert cfg.tls.verify_mode is ssl.CERT_OPTIONAL
    assert cfg.auth_required and set(cfg.users) == {"prometheus"}
    assert cfg.headers == {"X-Frame-Options": "deny"}


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    cfg = load_web_config(write(tmp_path, ""))
    assert cfg.tls is None and not cfg.auth_required


def test_promtool_accepts_what_the_daemon_accepts(tls_dir: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    path = write(
        tls_dir,
        f"tls_server_config: {{cert_file: server.crt, key_file: server.key}}\n"
        f"basic_auth_users: {{prometheus: '{HASH}'}}\n",
    )
    load_web_config(path)
    proc = subprocess.run(
        [promtool, "check", "web-config", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("tls_server_config: {cert_file: server.crt}\n", "key_file", id="no-key"),
        pytest.param(
            "tls_server_config: {cert_file: nope.crt, key_file: server.key}\n",
            "tls_server_config.cert_file: cannot read",
            id="missing-cert",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.key, key_file: server.crt}\n",
            "tls_server_config: cert_file and key_file are not a PEM certificate",
            id="swapped",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "client_auth_type: RequireAnyClientCert}\n",
            "RequireAnyClientCert is not supported",
            id="require-any",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "client_auth_type: RequireAndVerifyClientCert}\n",
            "tls_server_config.client_ca_file: required",
            id="no-client-ca",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "client_auth_type: Sometimes}\n",
            "tls_server_config.client_auth_type",
            id="bad-client-auth",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: SSL3}\n",
            "tls_server_config.min_version",
            id="bad-version",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "min_version: TLS13, max_version: TLS12}\n",
            "max_version: lower than min_version",
            id="max-below-min",
        ),
        pytest.param(
            "tls_server_config: {cert_file: server.crt, key_file: server.key, "
            "cipher_suites: [TLS_AES_128_GCM_SHA256]}\n",
            "tls_server_config.cipher_suites: not supported",
            id="cipher-suites",
        ),
        pytest.param("basic_auth_users: {prometheus: hunter2}\n", "not a bcrypt hash", id="plain"),
        pytest.param("basic_auth_user: {}\n", "basic_auth_user: Extra inputs", id="typo"),
        pytest.param("tls_server_config: [\n", "(yaml): not valid YAML (line 2)", id="yaml"),
        pytest.param("- 1\n", "(document): must be a YAML mapping", id="list"),
        pytest.param(
            "http_server_config: {headers: {Authorization: x}}\n",
            "cannot be set: Authorization",
            id="reserved-header",
        ),
    ],
)
def test_invalid_files_name_the_field(tls_dir: Path, text: str, fragment: str) -> None:
    message = error(write(tls_dir, text))
    assert message.startswith(f"web config {tls_dir / 'web.yaml'}: ")
    assert fragment in message


def test_plaintext_password_is_not_echoed(tmp_path: Path) -> None:
    message = error(write(tmp_path, "basic_auth_users: {prometheus: zz-canary-password}\n"))
    assert "zz-canary-password" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    assert "(file): cannot read" in error(tmp_path / "missing.yaml")


# --- the authenticator ---------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_authenticator_checks_bcrypt_and_caches() -> None:
    auth = Authenticator({"prometheus": HASH.encode()})
    assert await auth.check(basic("prometheus", "s3cret"))
    assert await auth.check(basic("prometheus", "s3cret"))  # cached
    assert len(auth._cache) == 1
    assert not await auth.check(basic("prometheus", "wrong"))
    assert not await auth.check(basic("grafana", "s3cret"))  # unknown user
    assert not await auth.check(None)
    assert not await auth.check("Bearer abc")
    assert not await auth.check("Basic !!!not-base64")
    assert not await auth.check("Basic " + base64.b64encode(b"no-colon").decode())


def test_reload_keeps_the_running_config_when_the_new_one_is_invalid(tls_dir: Path) -> None:
    path = write(tls_dir, f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    holder = WebConfigHolder(load_web_config(path))
    other = bcrypt.hashpw(b"new", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"basic_auth_users: {{grafana: '{other}'}}\n")
    assert holder.changed() and holder.reload("test")
    assert holder.config is not None and set(holder.config.users) == {"grafana"}
    path.write_text("basic_auth_users: {grafana: not-a-hash}\n")
    assert holder.changed() and not holder.reload("test")
    assert set(holder.config.users) == {"grafana"}
    assert not holder.changed()  # the broken file is not retried on every poll
