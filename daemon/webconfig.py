"""TLS and basic authentication for the HTTP endpoints, in the Prometheus exporter web
configuration format (the file exporters read with `--web.config.file`, see
https://prometheus.io/docs/prometheus/latest/configuration/https/):

    tls_server_config:
      cert_file: /etc/posture-daemon/tls/tls.crt
      key_file: /etc/posture-daemon/tls/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: /etc/posture-daemon/tls/ca.crt  # optional
      min_version: TLS12                              # optional
    basic_auth_users:
      prometheus: $2b$12$...                          # bcrypt hash
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}

Off by default: without POSTURE_HTTP__WEB_CONFIG_FILE the endpoints are plain HTTP without
authentication. Relative paths are relative to the file's directory. The file is validated at start
(a clear error and exit code 2); it is re-read on SIGHUP and when it or a certificate changes
(rotation by cert-manager): a valid new file applies to new connections, an invalid one is logged
and the running configuration stays.

Basic authentication guards /metrics and the index; /livez and /readyz answer without it (kubelet
probes cannot carry credentials without writing them into the pod spec, and they reveal nothing
but "ok"), over TLS when TLS is on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bcrypt
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = structlog.get_logger("posture.http")

TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Names of the Go exporter-toolkit that Python's TLS cannot honour: rejected, never ignored.
_UNSUPPORTED_TLS = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites")
AUTH_REALM = 'Basic realm="posture-daemon", charset="UTF-8"'


class WebConfigError(Exception):
    """The web configuration file cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] = []
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion | None = None


class HttpServerConfig(_Strict):
    headers: dict[str, str] = {}
    http2: bool = Field(default=True, description="Accepted for compatibility; HTTP/1.1 only.")

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = {"authorization", "www-authenticate", "content-type", "content-length"}
        bad = sorted(k for k in v if k.lower() in reserved)
        if bad:
            raise ValueError(f"these headers cannot be set: {', '.join(bad)}")
        return v


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = {}
    http_server_config: HttpServerConfig = HttpServerConfig()


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration: the TLS context (or None) and the users."""

    source: Path
    tls: ssl.SSLContext | None
    tls_config: TlsServerConfig | None
    users: dict[str, bytes]  # name -> bcrypt hash
    headers: dict[str, str]
    digest: str

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def _problem(field: str, message: str, source: Path) -> WebConfigError:
    return WebConfigError(f"web config {source}: {field}: {message}")


def _read(path: Path, field: str, source: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _problem(field, f"cannot read {path}: {exc.strerror}", source) from None


def _tls_context(cfg: TlsServerConfig, base: Path, source: Path) -> ssl.SSLContext:
    if cfg.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        raise _problem(
            "tls_server_config.client_auth_type",
            f"{cfg.client_auth_type} is not supported (a client certificate is always verified "
            "here): use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            source,
        )
    verifies = cfg.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if verifies and cfg.client_ca_file is None:
        raise _problem(
            "tls_server_config.client_ca_file",
            f"required with client_auth_type {cfg.client_auth_type}",
            source,
        )
    if cfg.client_allowed_sans:
        raise _problem(
            "tls_server_config.client_allowed_sans",
            "not supported: restrict clients with client_ca_file",
            source,
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[cfg.min_version]
    if cfg.max_version is not None:
        if _TLS_VERSIONS[cfg.max_version] < ctx.minimum_version:
            raise _problem("tls_server_config.max_version", "lower than min_version", source)
        ctx.maximum_version = _TLS_VERSIONS[cfg.max_version]
    load_certificate(ctx, cfg, base, source)
    if verifies and cfg.client_ca_file is not None:
        ca = _resolve(base, cfg.client_ca_file)
        _read(ca, "tls_server_config.client_ca_file", source)
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise _problem(
                "tls_server_config.client_ca_file", f"not a PEM CA bundle: {exc.reason}", source
            ) from None
        ctx.verify_mode = (
            ssl.CERT_REQUIRED
            if cfg.client_auth_type == "RequireAndVerifyClientCert"
            else ssl.CERT_OPTIONAL
        )
    return ctx


def load_certificate(ctx: ssl.SSLContext, cfg: TlsServerConfig, base: Path, source: Path) -> None:
    cert, key = _resolve(base, cfg.cert_file), _resolve(base, cfg.key_file)
    _read(cert, "tls_server_config.cert_file", source)
    _read(key, "tls_server_config.key_file", source)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise _problem(
            "tls_server_config",
            f"cert_file and key_file are not a PEM certificate and its key: {exc.reason}",
            source,
        ) from None


def _users(raw: dict[str, str], source: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, hashed in raw.items():
        field = f"basic_auth_users.{name}"
        if not name or ":" in name:
            raise _problem(field, "a user name must be non-empty and contain no ':'", source)
        data = hashed.encode()
        try:
            bcrypt.checkpw(b"", data)  # raises on anything that is not a bcrypt hash
        except ValueError:
            raise _problem(
                field, "not a bcrypt hash (htpasswd -nBC 10 USER, or python -m bcrypt)", source
            ) from None
        out[name] = data
    return out


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"\0missing")
    return h.hexdigest()


def _watched(source: Path, doc: WebConfigFile) -> list[Path]:
    base = source.parent
    paths = [source]
    tls = doc.tls_server_config
    if tls is not None:
        paths += [_resolve(base, tls.cert_file), _resolve(base, tls.key_file)]
        if tls.client_ca_file is not None:
            paths.append(_resolve(base, tls.client_ca_file))
    return paths


def _parse(source: Path) -> WebConfigFile:
    text = _read(source, "(file)", source)
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise _problem("(yaml)", f"not valid YAML{where}", source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _problem("(document)", "must be a YAML mapping", source)
    tls = data.get("tls_server_config")
    if isinstance(tls, dict):
        for name in _UNSUPPORTED_TLS:
            if name in tls:
                raise _problem(
                    f"tls_server_config.{name}",
                    "not supported: Python's TLS defaults are used (set min_version instead)",
                    source,
                )
    try:
        return WebConfigFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(document)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise _problem(field, str(err["msg"]) + more, source) from None


def load_web_config(source: Path) -> WebConfig:
    """Read and validate the file, its certificates and its users. Raises WebConfigError."""
    doc = _parse(source)
    tls = (
        _tls_context(doc.tls_server_config, source.parent, source)
        if doc.tls_server_config is not None
        else None
    )
    return WebConfig(
        source=source,
        tls=tls,
        tls_config=doc.tls_server_config,
        users=_users(doc.basic_auth_users, source),
        headers=dict(doc.http_server_config.headers),
        digest=_digest(_watched(source, doc)),
    )


class Authenticator:
    """Checks basic-auth credentials against bcrypt hashes, off the event loop, with a cache.

    bcrypt is slow on purpose (tens to hundreds of milliseconds): every check runs in a worker
    thread, and results are cached by (user, SHA-256 of the password) so a scrape every 15 s
    costs one bcrypt per password, as in the Prometheus exporter-toolkit. Unknown users are
    checked against a dummy hash so they take as long as known ones.
    """

    _DUMMY = bcrypt.hashpw(b"posture-daemon", bcrypt.gensalt(rounds=10))

    def __init__(self, users: dict[str, bytes], cache_size: int = 256) -> None:
        self.users = users
        self._cache: OrderedDict[tuple[str, bytes, bytes], bool] = OrderedDict()
        self._size = cache_size

    @staticmethod
    def parse(header: str) -> tuple[str, str] | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    async def check(self, header: str | None) -> bool:
        if not header:
            return False
        creds = self.parse(header)
        if creds is None:
            return False
        user, password = creds
        hashed = self.users.get(user)
        key = (user, hashlib.sha256(password.encode()).digest(), hashed or b"")
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            None, bcrypt.checkpw, password.encode(), hashed or self._DUMMY
        )
        ok = ok and hashed is not None
        self._cache[key] = ok
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return ok


def _now(fn: Callable[[], None]) -> None:
    fn()


class WebConfigHolder:
    """The running web configuration; re-read on SIGHUP or when a file changes."""

    def __init__(self, config: WebConfig | None) -> None:
        self.config = config
        self.auth = Authenticator(config.users if config else {})
        self._seen = config.digest if config else ""  # files last looked at, valid or not
        # Where the live TLS context is changed: the HTTP server, which uses it on a thread of
        # its own, sets this to run the change on that thread (an SSLContext must not change
        # while another thread handshakes with it). Unset: at once, on the caller's thread.
        self.on_server_thread: Callable[[Callable[[], None]], None] | None = None

    @property
    def tls(self) -> ssl.SSLContext | None:
        return self.config.tls if self.config else None

    def reload(self, reason: str) -> bool:
        current = self.config
        if current is None:
            return False
        try:
            new = load_web_config(current.source)
        except WebConfigError as exc:
            self._seen = self._digest_now()
            log.error(
                "web config reload rejected; keeping the running one",
                reason=reason,
                problem=str(exc),
            )
            return False
        self._seen = new.digest
        if new.digest == current.digest:
            return False
        if (new.tls is None) != (current.tls is None) or (
            new.tls_config is not None
            and current.tls_config is not None
            and (
                new.tls_config.client_auth_type != current.tls_config.client_auth_type
                or new.tls_config.client_ca_file != current.tls_config.client_ca_file
            )
        ):
            log.error(
                "web config changed TLS on/off or client authentication: restart to apply; "
                "keeping the running one"
            )
            self.config = WebConfig(
                current.source,
                current.tls,
                current.tls_config,
                current.users,
                current.headers,
                new.digest,
            )
            return False
        if current.tls is not None and new.tls_config is not None:
            # new handshakes use the new certificate; the listening socket stays
            swap = functools.partial(
                load_certificate, current.tls, new.tls_config, current.source.parent, current.source
            )
            (self.on_server_thread or _now)(swap)
        self.config = WebConfig(
            current.source, current.tls, new.tls_config, new.users, new.headers, new.digest
        )
        self.auth = Authenticator(new.users)
        log.info(
            "web config reloaded", reason=reason, tls=new.tls is not None, users=len(new.users)
        )
        return True

    def _digest_now(self) -> str:
        cfg = self.config
        if cfg is None:
            return ""
        try:
            return _digest(_watched(cfg.source, _parse(cfg.source)))
        except WebConfigError:
            return _digest([cfg.source])

    def changed(self) -> bool:
        return self.config is not None and self._digest_now() != self._seen

    async def watch(self, interval: float, stop: asyncio.Event) -> None:
        if self.config is None or interval <= 0:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                if self.changed():
                    self.reload("file changed")
