"""A WSGI middleware in front of moto for the ECS service fields moto 5.2 drops.

moto's CreateService/UpdateService ignore `deploymentConfiguration` (the deployment circuit
breaker) and DescribeServices never returns it. This middleware lets moto answer, remembers what
was sent for each service ARN, and adds it to moto's answers in botocore's shape (AWS's default,
breaker off, when nothing was sent). Everything else passes through unchanged. A moto reset
(POST /moto-api/reset) forgets what it remembered.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
_SERVICE_OPS = ("CreateService", "UpdateService", "DescribeServices")
# What ECS returns for a service created without a deploymentConfiguration.
DEFAULT_DEPLOYMENT: dict[str, Any] = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}


class EcsDeploymentShim:
    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.deployments: dict[str, dict[str, Any]] = {}  # service ARN -> configuration
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            with self._lock:
                self.deployments.clear()
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        operation = target[len(_ECS_TARGET) :] if target.startswith(_ECS_TARGET) else ""
        if operation in _SERVICE_OPS:
            return self._services(environ, start_response, operation)
        return self.app(environ, start_response)

    def _services(self, environ: Environ, start: StartResponse, operation: str) -> Iterable[bytes]:
        """Let moto answer, then add the deploymentConfiguration moto drops."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            sent = json.loads(body or b"{}").get("deploymentConfiguration")
        except (json.JSONDecodeError, AttributeError):
            sent = None
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        answer = b"".join(self.app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        if status.startswith("200"):
            try:
                doc = json.loads(answer)
            except json.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                services = [doc["service"]] if "service" in doc else doc.get("services") or []
                with self._lock:
                    for svc in services:
                        arn = str(svc.get("serviceArn", ""))
                        if operation != "DescribeServices" and isinstance(sent, dict):
                            merged = {**self.deployments.get(arn, DEFAULT_DEPLOYMENT), **sent}
                            self.deployments[arn] = merged
                        svc["deploymentConfiguration"] = self.deployments.get(
                            arn, DEFAULT_DEPLOYMENT
                        )
                answer = json.dumps(doc).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(answer))))
        start(status, headers)
        return [answer]
