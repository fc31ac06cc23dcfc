"""An embedded moto server on loopback, with a small shim for the Lambda operations moto lacks.

moto 5 answers these Lambda operations with HTTP 404; the shim, a WSGI middleware in front of
moto's own application, answers them exactly in the shape botocore's service model gives them:
- CreateCodeSigningConfig / GetCodeSigningConfig / ListCodeSigningConfigs, from memory, and
  ListFunctionsByCodeSigningConfig from moto's functions;
- GetAccountSettings, computed from moto's own state: the account-region's concurrency limit
  (1000 as in AWS, or what the demo or a test set through `set_concurrency_limit` or
  `POST /posture-shim/lambda/account-limit`) minus the reservations of its functions in moto;
- Put/Get/List/DeleteProvisionedConcurrencyConfig(s), from memory, checked against moto's
  functions, versions and aliases.
- GetLayerVersionByArn (moto: 500), from moto's layers in the owning account and region, with
  AWS's permission check (the caller's own account, or the layer version's policy);
- CreateFunction with a layer of another account: moto would swap it for the caller's own layer
  of the same name (or refuse it); the shim checks it as AWS does (it exists, the layer version's
  policy lets the caller's account use it), lets moto create the function without it, then puts
  the foreign layer back in moto's function and in the answer, in the order it was given.
It also enforces on PutFunctionConcurrency what AWS does and moto (without a global environment
variable) does not: at least 100 of the account-region's limit stays unreserved.
Two more gaps matter to the configuration export:
- moto returns no RevisionId for functions; the shim adds one to ListFunctions, GetFunction,
  ListVersionsByFunction and GetFunctionConfiguration,
  derived from the configuration and the resource-based policy (what changes it in AWS), so the
  daemon's change detection sees what it would see in AWS;
- GetFunction's `Code.Location` in moto is a made-up S3 URL that cannot be fetched; the shim
  rewrites it to a presigned-style URL on this server (10 minutes, X-Amz-Signature checked) that
  serves moto's own copy of the package, as AWS's presigned URL does;
- moto checks an `If-None-Match: *` PutObject and then writes, unlocked: two concurrent requests can
  both succeed. S3 guarantees one winner, so the shim serialises conditional PutObjects.
The backup posture's gaps (AWS Backup, time) are answered by daemon/demo/backup_shim.py.
Everything else goes to moto unchanged. The daemon talks to it over HTTP like to any AWS endpoint.
Tests use the same server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# moto reads these when its backends are first created: set them before importing moto.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_CSC_PATH = "/2020-04-22/code-signing-configs"
_ACCOUNT_SETTINGS = re.compile(r"^/2016-08-19/account-settings/?$")
_PROVISIONED = re.compile(r"^/2019-09-30/functions/([^/]+)/provisioned-concurrency/?$")
_RESERVED = re.compile(r"^/2017-10-31/functions/([^/]+)/concurrency/?$")
_FUNCTIONS = re.compile(r"^/2015-03-31/functions/?$")
_LAYERS = "/2018-10-31/layers"
_LAYER_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):(\d{12}):layer:([^:]+):(\d+)$")
_ADMIN_LIMIT = "/posture-shim/lambda/account-limit"
_VERSIONS_OR_CONFIG = re.compile(r"^/2015-03-31/functions/[^/]+/(versions|configuration)/?$")
_GET_FUNCTION = re.compile(r"^/2015-03-31/functions/([^/]+)/?$")
_CODE_PATH = "/posture-shim/lambda-code/"
CODE_URL_SECONDS = 600  # AWS's presigned code location is valid for 10 minutes
_UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
DEFAULT_CONCURRENCY_LIMIT = 1000  # AWS's default per account and region
MIN_UNRESERVED = 100  # AWS keeps this much of the limit unreserved
# AWS's documented code size limits (bytes), as GetAccountSettings reports them
_CODE_LIMITS = {
    "TotalCodeSize": 80530636800,
    "CodeSizeUnzipped": 262144000,
    "CodeSizeZipped": 52428800,
}
_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/")
_SCOPE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/")


def _caller(environ: Environ) -> tuple[str, str]:
    """(access key id, region) from the SigV4 Authorization header."""
    m = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if m is None:
        return "", "us-east-1"
    return m.group(1), m.group(2)


def _account_for(access_key: str) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key))


def _lambda_backend(account: str, region: str) -> Any:
    from moto.awslambda.models import lambda_backends

    return lambda_backends[account][region]


def _revision(backend: Any, config: dict[str, Any]) -> str:
    """A function version's RevisionId, which moto does not return: AWS changes it on every
    configuration or code update and on every change of the resource-based policy (AddPermission,
    RemovePermission), so it is derived from moto's configuration of that version and its policy
    (the same for ListFunctions and GetFunction), as a UUID."""
    name = str(config.get("FunctionName", ""))
    version = str(config.get("Version") or "$LATEST")
    qualifier = None if version == "$LATEST" else version
    try:
        current = backend.get_function(name, qualifier).get_configuration()
    except Exception:  # gone since it was listed: the answer's own configuration
        current = config
    try:
        policy = backend.get_policy(name, qualifier)
    except Exception:  # no policy (moto raises its not-found error)
        policy = ""
    shown = {k: v for k, v in current.items() if k != "RevisionId"}
    digest = hashlib.sha256(json.dumps([shown, policy], sort_keys=True, default=str).encode())
    return str(uuid.UUID(bytes=digest.digest()[:16]))


def _function_name(name_or_arn: str) -> str:
    """FunctionName from a path segment: a name, a partial or a full ARN (no qualifier)."""
    text = urllib.parse.unquote(name_or_arn)
    if ":function:" in text:
        return text.split(":function:", 1)[1].split(":", 1)[0]
    return text.split(":", 1)[0]


def _timestamp() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass(frozen=True)
class ShimRequest:
    """What a fault rule sees of a request."""

    method: str
    path: str
    query: str
    body: bytes
    access_key: str
    region: str
    service: str
    amz_target: str = ""  # X-Amz-Target: the operation of JSON-protocol services

    @property
    def operation(self) -> str:
        """The operation name for query and JSON protocols ("" for REST services)."""
        if self.amz_target:
            return self.amz_target.rsplit(".", 1)[-1]
        return self.form().get("Action", "")

    def form(self) -> dict[str, str]:
        """Query-protocol parameters (STS, EC2, IAM...): Action, RoleArn, ..."""
        params = urllib.parse.parse_qs(self.query) | urllib.parse.parse_qs(
            self.body.decode(errors="replace")
        )
        return {k: v[0] for k, v in params.items()}


@dataclass(frozen=True)
class ShimResponse:
    status: str
    body: bytes
    content_type: str = "application/json"


FaultRule = Callable[[ShimRequest], ShimResponse | None]


def query_error(code: str, message: str, status: str = "403 Forbidden") -> ShimResponse:
    """An error in the XML shape of query-protocol services (STS, IAM, EC2)."""
    xml = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    )
    return ShimResponse(status, xml.encode(), "text/xml")


def json_error(code: str, message: str, status: str = "400 Bad Request") -> ShimResponse:
    """An error in the JSON shape of rest-json/json services (Lambda, Logs, ...)."""
    body = json.dumps({"__type": code, "message": message, "Message": message}).encode()
    return ShimResponse(status, body)


class LambdaGapShim:
    """WSGI middleware: Create/GetCodeSigningConfig answered from memory, the rest by moto.

    Tests may also install fault rules (`add_fault`): a rule that returns a response answers the
    request instead of moto, e.g. AccessDenied for one account's AssumeRole.
    """

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.code_signing: dict[str, dict[str, Any]] = {}
        self.concurrency_limits: dict[tuple[str, str], int] = {}
        # (account, region, function name) -> qualifier -> configuration
        self.provisioned: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self.faults: list[FaultRule] = []
        # presigned code URLs: token -> (account, region, function, qualifier, signature, expiry)
        self.code_urls: dict[str, tuple[str, str, str, str | None, str, float]] = {}
        self._lock = threading.Lock()
        self._conditional_put = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.code_signing.clear()
            self.concurrency_limits.clear()
            self.provisioned.clear()
            self.code_urls.clear()

    def set_concurrency_limit(self, account: str, region: str, limit: int) -> None:
        """The account-region's ConcurrentExecutions limit (AWS's default 1000 otherwise)."""
        with self._lock:
            self.concurrency_limits[(account, region)] = int(limit)

    def concurrency_limit(self, account: str, region: str) -> int:
        with self._lock:
            return self.concurrency_limits.get((account, region), DEFAULT_CONCURRENCY_LIMIT)

    def add_fault(self, rule: FaultRule) -> None:
        with self._lock:
            self.faults.append(rule)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault(self, environ: Environ) -> ShimResponse | None:
        with self._lock:
            rules = list(self.faults)
        if not rules:
            return None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        key, region = _caller(environ)
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        request = ShimRequest(
            method=environ.get("REQUEST_METHOD", "GET"),
            path=environ.get("PATH_INFO", ""),
            query=environ.get("QUERY_STRING", ""),
            body=body,
            access_key=key,
            region=region,
            service=scope.group(1) if scope else "",
            amz_target=environ.get("HTTP_X_AMZ_TARGET", ""),
        )
        for rule in rules:
            response = rule(request)
            if response is not None:
                return response
        return None

    @staticmethod
    def _json(start: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
        data = json.dumps(body).encode()
        start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        fault = self._fault(environ)
        if fault is not None:
            start_response(
                fault.status,
                [("Content-Type", fault.content_type), ("Content-Length", str(len(fault.body)))],
            )
            return [fault.body]
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.rstrip("/") == "/moto-api/reset" and method == "POST":
            self.reset()
        if path.startswith(_CSC_PATH):
            return self._code_signing(environ, start_response, path)
        if path == _ADMIN_LIMIT and method == "POST":
            body = json.loads(self._body(environ) or b"{}")
            self.set_concurrency_limit(
                str(body["AccountId"]), str(body["Region"]), int(body["ConcurrentExecutions"])
            )
            return self._json(start_response, "200 OK", {})
        if _ACCOUNT_SETTINGS.match(path) and method == "GET":
            return self._account_settings(environ, start_response)
        provisioned = _PROVISIONED.match(path)
        if provisioned:
            return self._provisioned(environ, start_response, provisioned.group(1))
        if path.rstrip("/") == _LAYERS and method == "GET":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            if (query.get("find") or [""])[0] == "LayerVersion":
                return self._layer_by_arn(environ, start_response, (query.get("Arn") or [""])[0])
        if _FUNCTIONS.match(path) and method == "POST":
            return self._create_function(environ, start_response)
        reserved = _RESERVED.match(path)
        if reserved and method == "PUT":
            refused = self._check_reservation(environ, reserved.group(1))
            if refused is not None:
                return self._json(start_response, "400 Bad Request", refused)
        if path.startswith(_CODE_PATH) and method == "GET":
            return self._code_download(environ, start_response, path[len(_CODE_PATH) :])
        if method == "GET" and (_FUNCTIONS.match(path) or _VERSIONS_OR_CONFIG.match(path)):
            return self._list_functions(environ, start_response)
        get_function = _GET_FUNCTION.match(path)
        if get_function and method == "GET":
            return self._get_function(environ, start_response, get_function.group(1))
        if method == "PUT" and environ.get("HTTP_IF_NONE_MATCH"):
            with self._conditional_put:  # check-and-write as one step, as S3 does
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)

    # --- RevisionId (moto has none for functions) ---------------------------------------------

    def _list_functions(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        """ListFunctions, ListVersionsByFunction and GetFunctionConfiguration with the
        RevisionId moto leaves out (see `_revision`)."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self.app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        if status.startswith("200"):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                account, region = self._where(environ)
                backend = _lambda_backend(account, region)
                entries = doc.get("Functions") or doc.get("Versions")
                if not isinstance(entries, list):
                    entries = [doc] if "FunctionName" in doc else []
                for entry in entries:
                    if isinstance(entry, dict) and "RevisionId" not in entry:
                        entry["RevisionId"] = _revision(backend, entry)
                body = json.dumps(doc).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
        start(status, headers)
        return [body]

    # --- GetFunction's code location ---------------------------------------------------------

    def _get_function(
        self, environ: Environ, start: StartResponse, name_or_arn: str
    ) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self.app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        if status.startswith("200"):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            config = (doc or {}).get("Configuration")
            if isinstance(config, dict) and "RevisionId" not in config:
                account, region = self._where(environ)
                config["RevisionId"] = _revision(_lambda_backend(account, region), config)
                body = json.dumps(doc).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
            code = (doc or {}).get("Code") or {}
            if code.get("RepositoryType") == "S3" and code.get("Location"):
                account, region = self._where(environ)
                query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
                qualifier = (query.get("Qualifier") or [None])[0]
                code["Location"] = self._presign(
                    environ, account, region, _function_name(name_or_arn), qualifier
                )
                body = json.dumps(doc).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
        start(status, headers)
        return [body]

    def _presign(
        self, environ: Environ, account: str, region: str, name: str, qualifier: str | None
    ) -> str:
        import time

        token = secrets.token_hex(16)
        signature = secrets.token_hex(32)
        with self._lock:
            self.code_urls[token] = (
                account,
                region,
                name,
                qualifier,
                signature,
                time.time() + CODE_URL_SECONDS,
            )
        host = environ.get("HTTP_HOST") or "127.0.0.1"
        query = urllib.parse.urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Credential": f"ASIAEXAMPLE/20250101/{region}/s3/aws4_request",
                "X-Amz-Expires": str(CODE_URL_SECONDS),
                "X-Amz-SignedHeaders": "host",
                "X-Amz-Signature": signature,
            }
        )
        return f"http://{host}{_CODE_PATH}{token}?{query}"

    def _code_download(self, environ: Environ, start: StartResponse, token: str) -> Iterable[bytes]:
        import time

        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        with self._lock:
            found = self.code_urls.get(token)
        denied = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        if (
            found is None
            or (query.get("X-Amz-Signature") or [""])[0] != found[4]
            or time.time() > found[5]
        ):
            start("403 Forbidden", [("Content-Type", "application/xml")])
            return [denied]
        account, region, name, qualifier, _, _ = found
        try:
            fn = _lambda_backend(account, region).get_function(name, qualifier)
            data = bytes(fn.code_bytes)
        except Exception:
            start("404 Not Found", [("Content-Type", "application/xml")])
            return [b"<Error><Code>NoSuchKey</Code></Error>"]
        start(
            "200 OK",
            [("Content-Type", "application/zip"), ("Content-Length", str(len(data)))],
        )
        return [data]

    @staticmethod
    def _body(environ: Environ) -> bytes:
        """The request body, left readable for moto."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return bytes(body)

    @staticmethod
    def _where(environ: Environ) -> tuple[str, str]:
        key, region = _caller(environ)
        return _account_for(key), region

    @staticmethod
    def _error(code: str, message: str) -> dict[str, Any]:
        return {"Type": "User", "Message": message, "message": message, "__type": code}

    # --- GetAccountSettings ----------------------------------------------------------------------

    def _account_settings(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        account, region = self._where(environ)
        backend = _lambda_backend(account, region)
        latest = list(backend.list_functions())
        reserved = sum(int(f.reserved_concurrency or 0) for f in latest)
        code = sum(int(getattr(f, "code_size", 0) or 0) for f in backend.list_functions("ALL"))
        limit = self.concurrency_limit(account, region)
        body = {
            "AccountLimit": {
                **_CODE_LIMITS,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": limit - reserved,
            },
            "AccountUsage": {"TotalCodeSize": code, "FunctionCount": len(latest)},
        }
        return self._json(start, "200 OK", body)

    def _check_reservation(self, environ: Environ, name_or_arn: str) -> dict[str, Any] | None:
        """AWS refuses a reservation that leaves less than 100 of the limit unreserved."""
        account, region = self._where(environ)
        try:
            wanted = int(json.loads(self._body(environ) or b"{}")["ReservedConcurrentExecutions"])
        except (KeyError, TypeError, ValueError):
            return None  # moto answers malformed requests itself
        name = _function_name(name_or_arn)
        others = sum(
            int(f.reserved_concurrency or 0)
            for f in _lambda_backend(account, region).list_functions()
            if f.function_name != name
        )
        if self.concurrency_limit(account, region) - others - wanted < MIN_UNRESERVED:
            return self._error(
                "InvalidParameterValueException",
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}].",
            )
        return None

    # --- layers of other accounts -----------------------------------------------------------------

    @staticmethod
    def _layer_version(arn: str) -> tuple[Any, str] | None:
        """(moto's layer version, its owner account) for a layer version ARN; None if unknown."""
        m = _LAYER_ARN.match(arn)
        if m is None:
            return None
        region, owner = m.group(1), m.group(2)
        found = _lambda_backend(owner, region).layers_versions_by_arn(arn)
        return (found, owner) if found is not None else None

    @staticmethod
    def _may_use(layer_version: Any, owner: str, account: str) -> bool:
        """AWS's check: the owner's own account, or the layer version policy grants the account
        (or everyone) lambda:GetLayerVersion."""
        if account == owner:
            return True
        try:
            policy = json.loads(layer_version.policy.wire_format()).get("Policy")
            statements = json.loads(policy).get("Statement", []) if policy else []
        except Exception:  # moto raises its own "not found" when the version has no policy
            return False
        for st in statements:
            principal = st.get("Principal")
            principals = principal.get("AWS") if isinstance(principal, dict) else principal
            names = principals if isinstance(principals, list) else [principals]
            if st.get("Effect") == "Allow" and any(
                p in ("*", account) or str(p).endswith(f"::{account}:root") for p in names
            ):
                return True
        return False

    def _layer_by_arn(self, environ: Environ, start: StartResponse, arn: str) -> Iterable[bytes]:
        account, _ = self._where(environ)
        found = self._layer_version(arn)
        if found is None:
            return self._json(
                start,
                "404 Not Found",
                self._error("ResourceNotFoundException", f"Layer version {arn} does not exist."),
            )
        lv, owner = found
        if not self._may_use(lv, owner, account):
            return self._json(
                start,
                "403 Forbidden",
                self._error(
                    "AccessDeniedException",
                    f"User: {account} is not authorized to perform: lambda:GetLayerVersion on "
                    f"resource: {arn}",
                ),
            )
        body = {
            "Content": {"CodeSha256": lv.code_sha_256, "CodeSize": lv.code_size},
            "LayerArn": arn.rsplit(":", 1)[0],
            "LayerVersionArn": arn,
            "Description": lv.description,
            "CreatedDate": lv.created_date,
            "Version": int(lv.version),
            "CompatibleRuntimes": list(lv.compatible_runtimes),
            "CompatibleArchitectures": list(lv.compatible_architectures),
            "LicenseInfo": lv.license_info,
        }
        return self._json(start, "200 OK", body)

    def _create_function(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        """CreateFunction with layers of other accounts (see the module docstring)."""
        raw = self._body(environ)
        try:
            spec = json.loads(raw or b"{}")
        except ValueError:
            return self.app(environ, start)
        layers = spec.get("Layers") if isinstance(spec, dict) else None
        account, _ = self._where(environ)
        foreign = {
            arn: m.group(2)
            for arn in layers or []
            if (m := _LAYER_ARN.match(str(arn))) and m.group(2) != account
        }
        if not foreign:
            return self.app(environ, start)
        resolved: dict[str, Any] = {}
        for arn, owner in foreign.items():
            found = self._layer_version(arn)
            if found is None:
                return self._json(
                    start,
                    "400 Bad Request",
                    self._error(
                        "InvalidParameterValueException", f"Layer version {arn} does not exist."
                    ),
                )
            if not self._may_use(found[0], owner, account):
                return self._json(
                    start,
                    "403 Forbidden",
                    self._error(
                        "AccessDeniedException",
                        f"User: {account} is not authorized to perform: lambda:GetLayerVersion "
                        f"on resource: {arn}",
                    ),
                )
            resolved[arn] = found[0]
        own_only = dict(spec, Layers=[a for a in layers or [] if a not in foreign])
        data = json.dumps(own_only).encode()
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        body = b"".join(self.app(environ, capture))
        if not str(captured.get("status", "")).startswith("201"):
            start(captured["status"], captured["headers"])
            return [body]
        created = json.loads(body)
        own = {layer["Arn"]: layer for layer in created.get("Layers") or []}
        ordered = [
            {"Arn": arn, "CodeSize": resolved[arn].code_size} if arn in resolved else own[arn]
            for arn in layers or []
            if arn in resolved or arn in own
        ]
        fn = _lambda_backend(account, self._where(environ)[1]).get_function(spec["FunctionName"])
        fn.layers = ordered
        created["Layers"] = ordered
        return self._json(start, captured["status"], created)

    # --- provisioned concurrency -----------------------------------------------------------------

    def _provisioned(
        self, environ: Environ, start: StartResponse, name_or_arn: str
    ) -> Iterable[bytes]:
        account, region = self._where(environ)
        name = _function_name(name_or_arn)
        method = environ.get("REQUEST_METHOD", "GET")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        qualifier = (query.get("Qualifier") or [""])[0]
        backend = _lambda_backend(account, region)
        key = (account, region, name)
        try:
            fn = backend.get_function(name)
        except Exception:
            with self._lock:
                self.provisioned.pop(key, None)  # deleted in moto: its configurations go too
            return self._json(
                start,
                "404 Not Found",
                self._error("ResourceNotFoundException", f"Function not found: {name}"),
            )
        base_arn = fn.function_arn
        if method == "GET" and (query.get("List") or [""])[0] == "ALL":
            with self._lock:
                configs = dict(self.provisioned.get(key, {}))
            items = [
                {"FunctionArn": f"{base_arn}:{q}", **self._ready(c)}
                for q, c in sorted(configs.items())
            ]
            return self._json(start, "200 OK", {"ProvisionedConcurrencyConfigs": items})
        if not qualifier:
            return self._json(
                start,
                "400 Bad Request",
                self._error("InvalidParameterValueException", "Qualifier is required"),
            )
        if method == "PUT":
            problem = self._unpublished(backend, name, qualifier)
            if problem:
                return self._json(
                    start, "400 Bad Request", self._error("InvalidParameterValueException", problem)
                )
            body = json.loads(self._body(environ) or b"{}")
            config = {
                "RequestedProvisionedConcurrentExecutions": int(
                    body["ProvisionedConcurrentExecutions"]
                ),
                "LastModified": _timestamp(),
            }
            with self._lock:
                self.provisioned.setdefault(key, {})[qualifier] = config
            # AWS answers while allocation is still in progress; Get/List show it done.
            return self._json(
                start,
                "202 Accepted",
                {
                    **config,
                    "AllocatedProvisionedConcurrentExecutions": 0,
                    "AvailableProvisionedConcurrentExecutions": 0,
                    "Status": "IN_PROGRESS",
                },
            )
        with self._lock:
            found = self.provisioned.get(key, {}).get(qualifier)
            if method == "DELETE" and found is not None:
                del self.provisioned[key][qualifier]
        if found is None:
            return self._json(
                start,
                "404 Not Found",
                self._error(
                    "ProvisionedConcurrencyConfigNotFoundException",
                    f"No Provisioned Concurrency Config found for this function: {base_arn}",
                ),
            )
        if method == "DELETE":
            start("204 No Content", [("Content-Length", "0")])
            return [b""]
        return self._json(start, "200 OK", self._ready(found))

    @staticmethod
    def _ready(config: dict[str, Any]) -> dict[str, Any]:
        n = config["RequestedProvisionedConcurrentExecutions"]
        return {
            **config,
            "AllocatedProvisionedConcurrentExecutions": n,
            "AvailableProvisionedConcurrentExecutions": n,
            "Status": "READY",
        }

    @staticmethod
    def _unpublished(backend: Any, name: str, qualifier: str) -> str | None:
        """Why AWS would refuse provisioned concurrency on this qualifier (None: it accepts)."""
        if qualifier.upper() == "$LATEST":
            return _UNPUBLISHED
        if qualifier.isdigit():
            versions = {str(v.version) for v in backend.list_versions_by_function(name)}
            return None if qualifier in versions else f"Function version {qualifier} not found"
        aliases = {a.name: a for a in backend.list_aliases(name)}
        alias = aliases.get(qualifier)
        if alias is None:
            return f"Alias {qualifier} not found"
        if str(alias.function_version).upper() == "$LATEST":
            return _UNPUBLISHED
        return None

    def _code_signing(self, environ: Environ, start: StartResponse, path: str) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        rest = urllib.parse.unquote(path[len(_CSC_PATH) :].strip("/"))
        if method == "POST" and not rest:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            key, region = _caller(environ)
            account = _account_for(key)
            csc_id = "csc-" + secrets.token_hex(8)
            arn = f"arn:aws:lambda:{region}:{account}:code-signing-config:{csc_id}"
            config = {
                "CodeSigningConfigId": csc_id,
                "CodeSigningConfigArn": arn,
                "Description": body.get("Description", ""),
                "AllowedPublishers": body.get(
                    "AllowedPublishers", {"SigningProfileVersionArns": []}
                ),
                "CodeSigningPolicies": body.get(
                    "CodeSigningPolicies", {"UntrustedArtifactOnDeployment": "Warn"}
                ),
                "LastModified": "2026-01-01T00:00:00.000+0000",
            }
            with self._lock:
                self.code_signing[arn] = config
            return self._json(start, "201 Created", {"CodeSigningConfig": config})
        if method == "GET" and not rest:
            # ListCodeSigningConfigs (moto has none): the caller's account and region, one page
            key, region = _caller(environ)
            prefix = f"arn:aws:lambda:{region}:{_account_for(key)}:code-signing-config:"
            with self._lock:
                configs = [c for a, c in sorted(self.code_signing.items()) if a.startswith(prefix)]
            return self._json(start, "200 OK", {"CodeSigningConfigs": configs})
        if method == "GET" and rest.endswith("/functions"):
            # ListFunctionsByCodeSigningConfig (moto has none): from moto's functions, which keep
            # the CodeSigningConfigArn given to CreateFunction
            arn = rest.removesuffix("/functions")
            with self._lock:
                known = arn in self.code_signing
            if not known:
                return self._json(
                    start,
                    "404 Not Found",
                    {
                        "Type": "User",
                        "Message": f"{arn} not found",
                        "__type": "ResourceNotFoundException",
                    },
                )
            parts = arn.split(":")
            backend = _lambda_backend(parts[4], parts[3])
            arns = sorted(
                str(f.function_arn)
                for f in backend.list_functions()
                if getattr(f, "code_signing_config_arn", None) == arn
            )
            return self._json(start, "200 OK", {"FunctionArns": arns})
        if method == "GET" and rest:
            with self._lock:
                found = self.code_signing.get(rest)
            if found is None:
                return self._json(
                    start,
                    "404 Not Found",
                    {
                        "Type": "User",
                        "Message": f"{rest} not found",
                        "__type": "ResourceNotFoundException",
                    },
                )
            return self._json(start, "200 OK", {"CodeSigningConfig": found})
        return self._json(
            start,
            "400 Bad Request",
            {"__type": "InvalidRequestException", "Message": "unsupported"},
        )


class EmbeddedMoto:
    """moto server (with the shim) on 127.0.0.1 in a background thread.

    By default werkzeug's development server runs it, as `moto_server` does; it answers every
    request with `Connection: close`, so each call opens a new TCP connection. `keep_alive=True`
    serves the same application with waitress (HTTP/1.1 keep-alive, a pool of `threads`), so
    clients reuse connections the way they do with AWS endpoints: the scale benchmark uses it,
    where a new connection per call would be counted as the daemon's CPU.
    """

    def __init__(self, port: int = 0, keep_alive: bool = False, threads: int = 16) -> None:
        self.requested_port = port
        self.keep_alive = keep_alive
        self.threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.shim: LambdaGapShim | None = None
        self.backup: Any = None  # daemon.demo.backup_shim.BackupShim once started

    def start(self) -> str:
        import logging

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        from daemon.demo.backup_shim import BackupShim
        from daemon.demo.ecs_shim import EcsDeploymentShim

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # the ECS shim (daemon/demo/ecs_shim.py) keeps what moto drops of ECS services; the
        # backup shim (daemon/demo/backup_shim.py) answers AWS Backup and moves moto's clock
        self.backup = BackupShim(EcsDeploymentShim(DomainDispatcherApplication(create_backend_app)))
        self.shim = LambdaGapShim(self.backup)
        if self.keep_alive:
            from waitress.server import create_server

            # waitress logs a line whenever all its threads are busy: expected under load
            logging.getLogger("waitress.queue").setLevel(logging.ERROR)
            self._server = create_server(
                self.shim,
                host="127.0.0.1",
                port=self.requested_port,
                threads=self.threads,
                # idle keep-alive connections of many clients (waitress' default cap is 100,
                # beyond which it stops accepting; AWS endpoints have no such cap per caller)
                connection_limit=4096,
                # poll(), not select(): select() fails once a socket's number passes 1023, and
                # a daemon holding a client per (account, region, service) keeps more
                # connections than that alive at the benchmark's scale
                asyncore_use_poll=True,
            )
            run = self._server.run
        else:
            self._server = make_server(
                "127.0.0.1",
                self.requested_port,
                self.shim,
                threaded=True,
                request_handler=MotoRequestHandler,
            )
            run = self._server.serve_forever
        self._thread = threading.Thread(target=run, name="moto", daemon=True)
        self._thread.start()
        return self.url

    @property
    def port(self) -> int:
        if self.keep_alive:
            return int(self._server.effective_port)
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        import urllib.request

        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        if self._server is None:
            return
        if self.keep_alive:
            from waitress import wasyncore

            self._server.task_dispatcher.shutdown()
            wasyncore.close_all(self._server._map)  # ends the serving loop
            if self._thread is not None:
                self._thread.join(timeout=10)
        else:
            self._server.shutdown()
            self._server.server_close()
        self._server = None
