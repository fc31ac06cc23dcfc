"""KMS keys as the services that encrypt with them reference them (ECR repositories, RDS storage).

Whether a key is customer-managed is only known from KMS itself (DescribeKey's KeyManager): an
ARN does not say whether it is `aws/rds` or a key you control.
"""

from __future__ import annotations

from dataclasses import dataclass

ASPECT_KMS_KEY = "kms_key"  # kms:DescribeKey of the key a resource is encrypted with


@dataclass(frozen=True, slots=True)
class KmsKey:
    arn: str  # as the resource references it (normally the key ARN)
    found: bool = True  # False: KMS says the key does not exist (deleted, or a wrong reference)
    key_manager: str | None = None  # "CUSTOMER" | "AWS"
    key_state: str | None = None  # "Enabled", "Disabled", "PendingDeletion", ...
    key_arn: str | None = None  # the key's own ARN from DescribeKey

    @property
    def customer_managed(self) -> bool:
        return self.found and self.key_manager == "CUSTOMER"

    @property
    def unusable(self) -> bool:
        """The key cannot decrypt now, or will not after its deletion date."""
        return self.found and self.key_state in UNUSABLE_STATES


UNUSABLE_STATES = frozenset(
    {"Disabled", "PendingDeletion", "PendingReplicaDeletion", "Unavailable"}
)
