"""Event hooks that a session's clients share instead of copying.

botocore gives every client a copy of its session's event hooks: a trie of ~hundreds of handlers
(`botocore.hooks._PrefixTrie`), copied node by node -- ~75 KB, ~600 Python objects and ~0.6 ms of
CPU per client, about a third of what a client costs to make. A client then registers a dozen
handlers of its own (retries, the daemon's call metrics) and never changes the session's.

Here the session's trie (`SessionTrie`) hands each client an `OverlayTrie`: a frozen snapshot of
the session's handlers, shared by every client made since the session last changed, plus the
client's own registrations. Looking up an event walks both tries together, so a client sees
exactly the handlers, in exactly the order, that its own full copy would hold: at each node the
snapshot's handlers of a section come before the client's of the same section, as they would
have been appended after them. botocore caches each event's lookup per client, so the walk runs
once per event name. The lookup is a tuple where botocore's is a deque: botocore only iterates
it, and a client caches ~40 of them (a deque takes ~600 bytes even when empty; a tuple of a few
handlers under 100, the empty one none: ~20 MB over the ~700 clients of 10,000 functions).
A client that unregisters a handler turns its overlay into a full copy first (botocore does
that rarely, if ever, for our calls).

This leans on botocore's private trie (`append_item`, `remove_item`, `prefix_search`, `__copy__`
and the node layout `{'chunk', 'children', 'values'}` are what botocore and aiobotocore use);
tests/unit/test_hooks.py compares it with botocore's own copy on a real session's handlers.
"""

from __future__ import annotations

from typing import Any

from aiobotocore.hooks import AioHierarchicalEmitter
from aiobotocore.session import AioSession
from botocore.hooks import _MIDDLE, _PrefixTrie

Node = dict[str, Any]


class SessionTrie(_PrefixTrie):  # type: ignore[misc]
    """A session's handlers. Its copies (one per client) share one snapshot of them, made at the
    first copy after the session's handlers last changed."""

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: _PrefixTrie | None = None

    def append_item(self, key: str, value: Any, section: int = _MIDDLE) -> None:
        self._snapshot = None
        super().append_item(key, value, section)

    def remove_item(self, key: str, value: Any) -> None:
        self._snapshot = None
        super().remove_item(key, value)

    def __copy__(self) -> OverlayTrie:
        if self._snapshot is None:
            snapshot = _PrefixTrie()
            snapshot._root = self._recursive_copy(self._root)  # botocore's copy
            self._snapshot = snapshot  # never changed again: a change makes a new one
        return OverlayTrie(self._snapshot)


class OverlayTrie(_PrefixTrie):  # type: ignore[misc]
    """A client's handlers: a shared, frozen snapshot of its session's plus its own."""

    _root: Node

    def __init__(self, base: _PrefixTrie | None) -> None:
        super().__init__()
        self._base = base  # None once this trie holds everything itself

    def prefix_search(self, key: str) -> tuple[Any, ...]:
        """botocore's `_PrefixTrie.prefix_search` over the union of both tries: the most
        specific node first, wildcards (`*`) matching any one part."""
        if self._base is None:
            return tuple(super().prefix_search(key))
        collected: list[Any] = []
        parts = key.split(".")
        last = len(parts)
        stack: list[tuple[Node | None, Node | None, int]] = [(self._base._root, self._root, 0)]
        while stack:
            base, own, index = stack.pop()
            shared = base["values"] if base is not None else None
            mine = own["values"] if own is not None else None
            if shared is not None or mine is not None:
                ordered: list[Any] = []
                for section in range(3):
                    if shared is not None:
                        ordered += shared[section]
                    if mine is not None:
                        ordered += mine[section]
                collected.append(ordered)
            if index == last:
                continue
            part = parts[index]
            base_children = base["children"] if base is not None else {}
            own_children = own["children"] if own is not None else {}
            # botocore's order: the wildcard child is pushed first, so the direct one is
            # searched first
            for child in ("*", part):
                base_child, own_child = base_children.get(child), own_children.get(child)
                if base_child is not None or own_child is not None:
                    stack.append((base_child, own_child, index + 1))
        # botocore prepends each node's handlers: the last node visited comes first
        return tuple(handler for ordered in reversed(collected) for handler in ordered)

    def remove_item(self, key: str, value: Any) -> None:
        self._own_everything()
        super().remove_item(key, value)

    def _own_everything(self) -> None:
        """Become a full copy: the snapshot's handlers, then this trie's own appended after
        them, section by section, as botocore's copy would hold them."""
        if self._base is None:
            return
        own = self._root
        self._root = self._recursive_copy(self._base._root)
        self._base = None
        pending: list[tuple[Node, list[str]]] = [(own, [])]
        while pending:
            node, path = pending.pop()
            values = node["values"]
            if values is not None:
                for section in range(3):
                    for handler in values[section]:
                        self.append_item(".".join(path), handler, section)
            for chunk, child in node["children"].items():
                pending.append((child, [*path, chunk]))

    def __copy__(self) -> OverlayTrie:
        copied = OverlayTrie(self._base)
        copied._root = self._recursive_copy(self._root)
        return copied


def new_session() -> AioSession:
    """An aiobotocore session (as `aiobotocore.session.get_session()` makes) whose clients share
    its event handlers instead of copying them."""
    emitter = AioHierarchicalEmitter()
    emitter._handlers = SessionTrie()  # before the built-in handlers are registered
    return AioSession(event_hooks=emitter)
