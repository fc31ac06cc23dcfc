"""Secret detection on configuration values: what the collector keeps instead of the value.

The sample secrets are the documented example values of their vendors (AWS's AKIAIOSFODNN7EXAMPLE,
jwt.io's sample token) or made up in the same shape; none is a live credential.
"""

from __future__ import annotations

import math

import pytest

from daemon.model.secrets import (
    DETECTORS,
    HIGH_ENTROPY,
    PRECISE_DETECTORS,
    classify_value,
    is_reference,
    shannon_entropy,
)

AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def test_detector_vocabulary() -> None:
    assert (*PRECISE_DETECTORS, HIGH_ENTROPY) == DETECTORS
    assert HIGH_ENTROPY not in PRECISE_DETECTORS
    assert set(PRECISE_DETECTORS) == {
        "aws_access_key_id",
        "aws_secret_access_key",
        "private_key",
        "jwt",
        "github_token",
        "slack_token",
        "stripe_key",
        "url_credentials",
    }


@pytest.mark.parametrize(
    ("value", "detector"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
        ("ASIAY34FZKBOKMUTVV7A", "aws_access_key_id"),
        ("key=AKIAIOSFODNN7EXAMPLE;region=us-east-1", "aws_access_key_id"),
        (AWS_SECRET_KEY, "aws_secret_access_key"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "private_key"),
        ("-----BEGIN PRIVATE KEY-----", "private_key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private_key"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "private_key"),
        (JWT, "jwt"),
        ("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "github_token"),
        ("github_pat_11ABCDEFG0abcdefghijklmnopqrstuvwxyz0123456789", "github_token"),
        ("xoxb-1234567890-abcdefghij", "slack_token"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
        ("rk_live_abcdefghijklmnopqrstuvwx", "stripe_key"),
        ("postgres://app:hunter2@db.internal:5432/app", "url_credentials"),
        ("https://user:pa55@host.example.com/", "url_credentials"),
    ],
)
def test_each_precise_detector(value: str, detector: str) -> None:
    assert detector in classify_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "akiaiosfodnn7example",  # access key ids are upper-case
        "AKIAIOSFODNN7EXAMPL",  # 15 characters after the prefix
        "AKIAIOSFODNN7EXAMPLEX",  # 17: part of a longer token
        "XAKIAIOSFODNN7EXAMPLE",
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "https://example.com/path?user=a",
        "postgres://db.internal:5432/app",  # no credentials in the URL
        "ghp_short",
        "production",
        "us-east-1",
        "hello world this is a long sentence with words",
    ],
)
def test_values_that_are_not_secrets(value: str) -> None:
    assert classify_value(value) == frozenset()


@pytest.mark.parametrize(
    "value",
    [
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # SHA-1 hex: 40 chars, two classes
        "x" * 40,
        "abcABC1234" * 4,  # three classes but repetitive: low entropy
        "0123456789012345678901234567890123456789",
    ],
)
def test_low_variety_forty_character_strings_are_not_secret_keys(value: str) -> None:
    assert len(value) == 40
    assert "aws_secret_access_key" not in classify_value(value)


def test_stripe_test_mode_key_is_not_a_live_key() -> None:
    kinds = classify_value("sk_test_4eC39HqLyjWDarjtT1zdp7dc")
    assert "stripe_key" not in kinds
    assert kinds == frozenset({HIGH_ENTROPY})  # still random-looking


def test_secret_key_must_stand_alone() -> None:
    # 41 base64 characters: not a 40-character key
    assert "aws_secret_access_key" not in classify_value(AWS_SECRET_KEY + "Q")
    # a key padded with '=' is base64 data, not a key
    assert "aws_secret_access_key" not in classify_value(AWS_SECRET_KEY + "=")


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:secretsmanager:us-east-1:111111111111:secret:prod/db-AbCdEf",
        "arn:aws:ssm:us-east-1:111111111111:parameter/prod/db/password",
        "arn:aws-us-gov:secretsmanager:us-gov-west-1:111111111111:secret:db-AbCdEf",
        "arn:aws-cn:secretsmanager:cn-north-1:111111111111:secret:db-AbCdEf",
        "{{resolve:secretsmanager:prod/db:SecretString:password}}",
        "/aws/reference/secretsmanager/prod/db",
        "  arn:aws:secretsmanager:us-east-1:111111111111:secret:padded-AbCdEf",
    ],
)
def test_references_are_not_secrets(value: str) -> None:
    assert is_reference(value)
    assert classify_value(value) == frozenset()


def test_non_references() -> None:
    assert not is_reference("arn:aws:s3:::bucket")
    assert not is_reference(AWS_SECRET_KEY)
    assert not is_reference("")


@pytest.mark.parametrize("value", [None, ""])
def test_empty_values(value: str | None) -> None:
    assert classify_value(value) == frozenset()


def test_high_entropy() -> None:
    assert classify_value("Zq8#mP2!vL9@xR4$tN7%kW1^") == frozenset({HIGH_ENTROPY})
    # long and varied, but excluded by shape
    assert HIGH_ENTROPY not in classify_value("arn:aws:iam::111111111111:role/Zq8mP2vL9xR4tN7kW1aB")
    assert HIGH_ENTROPY not in classify_value("https://Zq8mP2vL9xR4tN7kW1aB.example.com/x")
    assert HIGH_ENTROPY not in classify_value("Zq8#mP2!vL9@ xR4$tN7%kW1^")  # whitespace
    assert HIGH_ENTROPY not in classify_value("Zq8#mP2!vL9@xR4$tN7")  # 19 characters
    assert HIGH_ENTROPY not in classify_value("zq8mp2vl9xr4tn7kw1ab0c")  # two classes only
    assert HIGH_ENTROPY in classify_value(AWS_SECRET_KEY)


def test_shannon_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("ab") == pytest.approx(1.0)
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert shannon_entropy("".join(chr(33 + i) for i in range(64))) == pytest.approx(math.log2(64))


def test_several_detectors_can_match_one_value() -> None:
    kinds = classify_value(JWT)
    assert {"jwt", HIGH_ENTROPY} <= kinds
    assert "aws_access_key_id" not in kinds


def test_result_is_an_immutable_set_of_known_detectors() -> None:
    kinds = classify_value("AKIAIOSFODNN7EXAMPLE")
    assert isinstance(kinds, frozenset)
    assert kinds <= set(DETECTORS)
