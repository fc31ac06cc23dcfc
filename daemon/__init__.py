"""posture-daemon: continuous compliance for AWS serverless and container estates, as metrics."""

from importlib import metadata

try:
    __version__ = metadata.version("posture-daemon")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
