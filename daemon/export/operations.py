"""The AWS operations of the configuration export and of restore, with the IAM actions they need.

All are `optional`: they only happen with the export turned on (or when an operator runs
`restore`). Three principals are involved, so three lists:

- EXPORT_READ: in each target account, with the reader role (what the sweep does not read already);
- EXPORT_WRITE: the snapshot bucket and the KMS key, with the daemon's own credentials or the role
  `POSTURE_EXPORT__ROLE_ARN` (typically in a backup account);
- RESTORE: in the target account, with the restore role (or the operator's own credentials), plus
  reading the bucket and decrypting environment values with the bucket's principal.

`DownloadFunctionCode` is not an API operation: it is the HTTP GET of the presigned
`Code.Location` GetFunction returns, authorised by `lambda:GetFunction`; it is counted under that
name in posture_aws_api_requests_total.
"""

from __future__ import annotations

from daemon.collectors.base import Operation


def _opt(service: str, operation: str, action: str) -> Operation:
    return Operation(service, operation, action, optional=True)


def _write(service: str, operation: str, action: str) -> Operation:
    return Operation(service, operation, action, optional=True, principal="export")


EXPORT_READ: tuple[Operation, ...] = (
    _opt("lambda", "GetFunction", "lambda:GetFunction"),
    _opt("lambda", "DownloadFunctionCode", "lambda:GetFunction"),
    _opt("lambda", "ListVersionsByFunction", "lambda:ListVersionsByFunction"),
    _opt("lambda", "GetPolicy", "lambda:GetPolicy"),
    _opt("lambda", "ListAliases", "lambda:ListAliases"),
    _opt("lambda", "GetFunctionUrlConfig", "lambda:GetFunctionUrlConfig"),
    _opt("lambda", "GetFunctionCodeSigningConfig", "lambda:GetFunctionCodeSigningConfig"),
    _opt("lambda", "GetFunctionEventInvokeConfig", "lambda:GetFunctionEventInvokeConfig"),
    _opt("lambda", "ListFunctionEventInvokeConfigs", "lambda:ListFunctionEventInvokeConfigs"),
    _opt("lambda", "ListProvisionedConcurrencyConfigs", "lambda:ListProvisionedConcurrencyConfigs"),
    _opt("lambda", "ListEventSourceMappings", "lambda:ListEventSourceMappings"),
)

EXPORT_WRITE: tuple[Operation, ...] = (
    _write("s3", "ListObjectsV2", "s3:ListBucket"),
    _write("s3", "GetObject", "s3:GetObject"),
    _write("s3", "HeadObject", "s3:GetObject"),
    _write("s3", "PutObject", "s3:PutObject"),
    _write("s3", "CopyObject", "s3:PutObject"),  # the source also needs s3:GetObject (above)
    _write("s3", "DeleteObjects", "s3:DeleteObject"),
    _write("kms", "Encrypt", "kms:Encrypt"),  # only with include_env_values
)

RESTORE: tuple[Operation, ...] = (
    # the snapshot (bucket principal)
    _opt("s3", "GetObject", "s3:GetObject"),
    _opt("s3", "ListObjectsV2", "s3:ListBucket"),
    _opt("kms", "Decrypt", "kms:Decrypt"),
    # dependencies checked in the target account and region
    _opt("iam", "GetRole", "iam:GetRole"),
    _opt("lambda", "GetLayerVersion", "lambda:GetLayerVersion"),
    _opt("lambda", "GetCodeSigningConfig", "lambda:GetCodeSigningConfig"),
    _opt("ec2", "DescribeSubnets", "ec2:DescribeSubnets"),
    _opt("ec2", "DescribeSecurityGroups", "ec2:DescribeSecurityGroups"),
    _opt("kms", "DescribeKey", "kms:DescribeKey"),
    # the function as it is (the same reads as the export)
    *(op for op in EXPORT_READ if op.operation != "DownloadFunctionCode"),
    _opt("lambda", "GetFunctionConfiguration", "lambda:GetFunctionConfiguration"),  # waits
    # writes
    _opt("lambda", "CreateFunction", "lambda:CreateFunction"),
    _opt("iam", "PassRole", "iam:PassRole"),  # CreateFunction/UpdateFunctionConfiguration
    _opt("lambda", "UpdateFunctionCode", "lambda:UpdateFunctionCode"),
    _opt("lambda", "UpdateFunctionConfiguration", "lambda:UpdateFunctionConfiguration"),
    _opt("lambda", "PublishVersion", "lambda:PublishVersion"),
    _opt("lambda", "CreateAlias", "lambda:CreateAlias"),
    _opt("lambda", "UpdateAlias", "lambda:UpdateAlias"),
    _opt("lambda", "DeleteAlias", "lambda:DeleteAlias"),
    _opt("lambda", "AddPermission", "lambda:AddPermission"),
    _opt("lambda", "RemovePermission", "lambda:RemovePermission"),
    _opt("lambda", "PutFunctionConcurrency", "lambda:PutFunctionConcurrency"),
    _opt("lambda", "DeleteFunctionConcurrency", "lambda:DeleteFunctionConcurrency"),
    _opt("lambda", "PutProvisionedConcurrencyConfig", "lambda:PutProvisionedConcurrencyConfig"),
    _opt(
        "lambda",
        "DeleteProvisionedConcurrencyConfig",
        "lambda:DeleteProvisionedConcurrencyConfig",
    ),
    _opt("lambda", "CreateFunctionUrlConfig", "lambda:CreateFunctionUrlConfig"),
    _opt("lambda", "UpdateFunctionUrlConfig", "lambda:UpdateFunctionUrlConfig"),
    _opt("lambda", "DeleteFunctionUrlConfig", "lambda:DeleteFunctionUrlConfig"),
    _opt("lambda", "PutFunctionEventInvokeConfig", "lambda:PutFunctionEventInvokeConfig"),
    _opt("lambda", "DeleteFunctionEventInvokeConfig", "lambda:DeleteFunctionEventInvokeConfig"),
    _opt("lambda", "CreateEventSourceMapping", "lambda:CreateEventSourceMapping"),
    _opt("lambda", "UpdateEventSourceMapping", "lambda:UpdateEventSourceMapping"),
    _opt("lambda", "DeleteEventSourceMapping", "lambda:DeleteEventSourceMapping"),
    _opt("lambda", "TagResource", "lambda:TagResource"),
    _opt("lambda", "UntagResource", "lambda:UntagResource"),
)

# What the daemon itself may call with the export on (zero-initialised API-call metrics, IAM).
DAEMON: tuple[Operation, ...] = (*EXPORT_READ, *EXPORT_WRITE)

# Operations that change AWS: none of them may happen while the export is off.
WRITES = frozenset(
    {"PutObject", "CopyObject", "DeleteObjects", "DeleteObject", "Encrypt"}
    | {op.operation for op in RESTORE if not op.operation.startswith(("Get", "List", "Describe"))}
)
