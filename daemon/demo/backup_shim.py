"""A WSGI middleware in front of moto for what the backup posture needs and moto 5.2 lacks.

- AWS Backup `ListProtectedResources` (moto: 404). Answered in botocore's shape (rest-json,
  `LastBackupTime` as epoch seconds, `NextToken` paging) from recovery points the demo or a test
  registers with `POST /posture-shim/backup/protected-resource` — moto cannot run backup jobs.
- Time: moto stamps every resource with the current time, so nothing can be days old. The demo
  estate needs old snapshots and old function versions; `POST /posture-shim/backdate` moves the
  creation time of an RDS snapshot or database, or the LastModified of a Lambda function's
  $LATEST or of one of its versions, inside moto's own state (moto then answers with it as with
  any other value).

Everything else passes through unchanged. A moto reset (POST /moto-api/reset) forgets the
recovery points.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

PROTECTED_PATH = "/posture-shim/backup/protected-resource"
BACKDATE_PATH = "/posture-shim/backdate"
_SCOPE = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")
_PAGE = 100  # ListProtectedResources' default page size


def _scope(environ: Environ) -> tuple[str, str, str]:
    """(access key, region, service) from the SigV4 Authorization header."""
    m = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (m.group(1), m.group(2), m.group(3)) if m else ("", "us-east-1", "")


def _when(value: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(value), dt.UTC)


def backdate(body: dict[str, Any]) -> None:
    """Move a creation or modification time inside moto's state (see the module docstring).

    {"Service": "rds", "AccountId", "Region", "Time": epoch seconds, and one of
     "DBSnapshotIdentifier", "DBClusterSnapshotIdentifier", "DBInstanceIdentifier",
     "DBClusterIdentifier"}
    {"Service": "lambda", "AccountId", "Region", "Time", "FunctionName", "Qualifier": "$LATEST"
     or a version number}
    """
    account, region, when = str(body["AccountId"]), str(body["Region"]), _when(body["Time"])
    if body["Service"] == "rds":
        from moto.rds.models import rds_backends

        backend = rds_backends[account][region]
        naive = when.replace(tzinfo=None)  # moto keeps naive UTC datetimes
        for key, table, attrs in (
            ("DBSnapshotIdentifier", backend.database_snapshots, ("created",)),
            ("DBClusterSnapshotIdentifier", backend.cluster_snapshots, ("created",)),
            ("DBInstanceIdentifier", backend.databases, ("created", "instance_create_time")),
            ("DBClusterIdentifier", backend.clusters, ("created", "cluster_create_time")),
        ):
            if key in body:
                item = table[str(body[key])]
                for attr in attrs:
                    setattr(item, attr, naive)
                return
        raise KeyError("no RDS identifier")
    if body["Service"] == "lambda":
        from moto.awslambda.models import lambda_backends

        storage = lambda_backends[account][region]._lambdas
        entry = storage._functions[str(body["FunctionName"])]
        qualifier = str(body.get("Qualifier", "$LATEST"))
        fn = (
            entry["latest"]
            if qualifier == "$LATEST"
            else next(v for v in entry["versions"] if str(v.version) == qualifier)
        )
        fn.last_modified = when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")  # moto's own format
        return
    raise KeyError(f"unknown service {body['Service']!r}")


class BackupShim:
    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        # (account, region) -> resource ARN -> ListProtectedResources entry
        self.protected: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def register(
        self,
        account: str,
        region: str,
        resource_arn: str,
        resource_type: str,
        last_backup: dt.datetime,
        vault: str = "Default",
    ) -> None:
        """A resource AWS Backup has backed up (its newest recovery point)."""
        vault_arn = f"arn:aws:backup:{region}:{account}:backup-vault:{vault}"
        entry = {
            "ResourceArn": resource_arn,
            "ResourceType": resource_type,
            "LastBackupTime": last_backup.timestamp(),
            "ResourceName": resource_arn.rsplit(":", 1)[-1],
            "LastBackupVaultArn": vault_arn,
            "LastRecoveryPointArn": f"arn:aws:rds:{region}:{account}:snapshot:awsbackup:job-"
            f"{int(last_backup.timestamp())}",
        }
        with self._lock:
            self.protected.setdefault((account, region), {})[resource_arn] = entry

    @staticmethod
    def _json(start: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
        data = json.dumps(body).encode()
        start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    @staticmethod
    def _body(environ: Environ) -> dict[str, Any]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        parsed = json.loads(raw or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.rstrip("/") == "/moto-api/reset" and method == "POST":
            with self._lock:
                self.protected.clear()
        if path == PROTECTED_PATH and method == "POST":
            body = self._body(environ)
            self.register(
                str(body["AccountId"]),
                str(body["Region"]),
                str(body["ResourceArn"]),
                str(body.get("ResourceType", "RDS")),
                _when(body["LastBackupTime"]),
                str(body.get("VaultName", "Default")),
            )
            return self._json(start_response, "200 OK", {})
        if path == BACKDATE_PATH and method == "POST":
            try:
                backdate(self._body(environ))
            except (KeyError, StopIteration) as exc:
                return self._json(start_response, "404 Not Found", {"message": str(exc)})
            return self._json(start_response, "200 OK", {})
        if path.rstrip("/") == "/resources" and method == "GET":
            key, region, service = _scope(environ)
            if service == "backup":
                return self._list_protected(environ, start_response, key, region)
        return self.app(environ, start_response)

    def _list_protected(
        self, environ: Environ, start: StartResponse, access_key: str, region: str
    ) -> Iterable[bytes]:
        from moto.iam.models import get_account_id_from

        account = str(get_account_id_from(access_key))
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        size = int((query.get("maxResults") or [_PAGE])[0])
        start_at = int((query.get("nextToken") or ["0"])[0])
        with self._lock:
            items = [v for _, v in sorted(self.protected.get((account, region), {}).items())]
        page = items[start_at : start_at + size]
        body: dict[str, Any] = {"Results": page}
        if start_at + size < len(items):
            body["NextToken"] = str(start_at + size)
        return self._json(start, "200 OK", body)
