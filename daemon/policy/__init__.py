"""The desired state: the policy file (scope, control settings, exemptions, reference data)."""

from daemon.policy.compiled import CompiledControl, EffectiveControl, ExemptionMatch, Policy
from daemon.policy.loader import LocatedProblem, PolicyError, load_policy, parse_policy_text

__all__ = [
    "CompiledControl",
    "EffectiveControl",
    "ExemptionMatch",
    "LocatedProblem",
    "Policy",
    "PolicyError",
    "load_policy",
    "parse_policy_text",
]
