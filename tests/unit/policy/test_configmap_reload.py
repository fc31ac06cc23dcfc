"""A policy mounted from a ConfigMap is reloaded when Kubernetes swaps the ConfigMap's contents.

The kubelet writes a ConfigMap volume as timestamped directories behind a `..data` symlink, with
each key a symlink through `..data`; an update writes a new directory and renames a new `..data`
symlink over the old one, so the file's inode never changes. This lays a directory out exactly
so (as the Helm chart mounts it: a directory, not a subPath) and swaps it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon.policy import load_policy
from daemon.policy.watch import PolicyHolder

POLICY = """\
version: 1
scope:
  accounts: {{static: [{{id: "111111111111"}}]}}
  regions: [{region}]
"""


def _atomic_write(volume: Path, generation: int, text: str) -> None:
    """What the kubelet's AtomicWriter does on every ConfigMap update."""
    data = volume / f"..2026_01_01_00_00_0{generation}.000000000"
    data.mkdir()
    (data / "policy.yaml").write_text(text)
    tmp_link = volume / "..data_tmp"
    tmp_link.symlink_to(data.name)
    tmp_link.replace(volume / "..data")
    key = volume / "policy.yaml"
    if not key.is_symlink():
        key.symlink_to("..data/policy.yaml")


async def test_policy_follows_configmap_symlink_swaps(tmp_path: Path) -> None:
    volume = tmp_path / "policy"
    volume.mkdir()
    _atomic_write(volume, 1, POLICY.format(region="us-east-1"))
    path = volume / "policy.yaml"
    holder = PolicyHolder(path, load_policy(path))
    changed = asyncio.Event()
    holder.on_change = lambda old, new: changed.set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(holder.watch(0.02, stop))
    try:
        _atomic_write(volume, 2, POLICY.format(region="eu-west-1"))
        await asyncio.wait_for(changed.wait(), 5)
        assert holder.current.document.scope.regions == ["eu-west-1"]
        # an invalid update is rejected and the running policy stays
        _atomic_write(volume, 3, "version: 1\nscope: nonsense\n")
        await asyncio.sleep(0.2)
        assert holder.current.document.scope.regions == ["eu-west-1"]
    finally:
        stop.set()
        await watcher
