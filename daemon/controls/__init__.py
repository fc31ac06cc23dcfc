"""Controls: pure functions from snapshots and policy parameters to findings. No I/O, no clock."""
