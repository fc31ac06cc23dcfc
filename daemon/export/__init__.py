"""Configuration backup of Lambda functions: export to S3, retention, restore.

The daemon's only writer, and opt-in (`POSTURE_EXPORT__ENABLED`). Pure parts (layout, manifest,
snapshot document, retention and restore planning) are separate from the I/O (bucket, reader,
exporter, restore), which goes through the one AWS call wrapper `daemon.aws.api.AwsApi`.
"""
