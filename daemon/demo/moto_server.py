"""An embedded moto server on loopback, with a small shim for the Lambda operations moto lacks.

moto 5 does not implement CreateCodeSigningConfig/GetCodeSigningConfig (HTTP 404). The shim is a
WSGI middleware in front of moto's own application that answers those two operations from memory,
exactly in the shape botocore's service model gives them; everything else goes to moto unchanged.
The daemon talks to it over HTTP like to any AWS endpoint. Tests use the same server.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# moto reads these when its backends are first created: set them before importing moto.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_CSC_PATH = "/2020-04-22/code-signing-configs"
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
        self.faults: list[FaultRule] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.code_signing.clear()

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
        if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            self.reset()
        if path.startswith(_CSC_PATH):
            return self._code_signing(environ, start_response, path)
        return self.app(environ, start_response)

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
    """moto server (with the shim) on 127.0.0.1 in a background thread."""

    def __init__(self, port: int = 0) -> None:
        self.requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.shim: LambdaGapShim | None = None

    def start(self) -> str:
        import logging

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        from daemon.demo.ecs_shim import EcsDeploymentShim

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # the ECS shim (daemon/demo/ecs_shim.py) keeps what moto drops of ECS services
        self.shim = LambdaGapShim(
            EcsDeploymentShim(DomainDispatcherApplication(create_backend_app))
        )
        self._server = make_server(
            "127.0.0.1",
            self.requested_port,
            self.shim,
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        return self.url

    @property
    def port(self) -> int:
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
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
