"""posture-daemon: continuous compliance for AWS serverless and container estates, as metrics."""

from importlib import metadata

try:
    __version__ = metadata.version("posture-daemon")
except metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

# Where the project's docs/ directory is published. Alert runbook links (deploy/prometheus) and the
# dashboards' links to control references point here; the Helm chart's `docsUrl` value replaces it
# with your own copy.
DOCS_URL = "https://github.com/posture-daemon/posture-daemon/blob/main/docs"
