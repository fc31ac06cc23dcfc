"""A client's shared-snapshot event hooks find the same handlers, in the same order, as botocore's
own per-client copy of its session's hooks (daemon/aws/hooks.py).

The reference is botocore's code: its `_PrefixTrie` copy of the session's real handlers, with
the same registrations applied through a second emitter. No AWS call is made.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

from aiobotocore.hooks import AioHierarchicalEmitter
from botocore.hooks import _PrefixTrie

from daemon.aws.hooks import OverlayTrie, SessionTrie, new_session

Handler = Callable[..., None]


def _trie(emitter: AioHierarchicalEmitter) -> Any:
    return emitter._handlers


def _session_emitter() -> AioHierarchicalEmitter:
    """The hierarchical emitter under a new session's event aliaser, built-in handlers in it."""
    emitter: AioHierarchicalEmitter = new_session().get_component("event_emitter")._emitter
    return emitter


def _botocore_copy(emitter: AioHierarchicalEmitter) -> AioHierarchicalEmitter:
    """What botocore gives a client: a copy of the whole trie, by botocore's own code."""
    reference = AioHierarchicalEmitter()
    plain = _PrefixTrie()
    plain._root = plain._recursive_copy(_trie(emitter)._root)
    reference._handlers = plain
    reference._unique_id_handlers = copy.copy(emitter._unique_id_handlers)
    return reference


def _keys(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[str]:
    if node["values"] is not None:
        yield ".".join(path)
    for chunk, child in node["children"].items():
        yield from _keys(child, (*path, chunk))


def _event_names(emitter: AioHierarchicalEmitter) -> list[str]:
    """Every key in the trie, made concrete and more specific, plus names nothing listens to."""
    names = {"before-call.nothing.Here", "after-call", "x"}
    for key in _keys(_trie(emitter)._root):
        concrete = key.replace("*", "lambda")
        names.update((key, concrete, f"{concrete}.lambda", f"{concrete}.lambda.GetFunction"))
    return sorted(names)


def _handler(i: int) -> Handler:
    def handler(**kwargs: Any) -> None:
        return None

    handler.__name__ = f"handler_{i}"
    return handler


def _register_same(
    emitters: tuple[AioHierarchicalEmitter, ...], keys: list[str], rnd: random.Random, count: int
) -> list[tuple[str, Handler]]:
    registered = []
    for i in range(count):
        key = rnd.choice(keys)
        handler = _handler(i)
        how = rnd.choice(("register_first", "register", "register_last"))
        for emitter in emitters:
            getattr(emitter, how)(key, handler)
        registered.append((key, handler))
    return registered


def _same_lookups(a: AioHierarchicalEmitter, b: AioHierarchicalEmitter, names: list[str]) -> None:
    for name in names:
        assert list(_trie(a).prefix_search(name)) == list(_trie(b).prefix_search(name)), name


def test_a_client_copy_shares_the_sessions_handlers_and_finds_the_same() -> None:
    session = _session_emitter()
    assert isinstance(_trie(session), SessionTrie)
    names = _event_names(session)
    assert len(names) > 300  # botocore's built-in handlers are all there
    rnd = random.Random(7)
    keys = [
        *rnd.sample(sorted(_keys(_trie(session)._root)), 40),  # existing nodes
        "needs-retry.lambda",
        "before-parse.lambda",
        "before-call.*.GetFunction",  # wildcards, existing and new
        "before-call.lambda.*",
        "after-call.*",
        "brand-new.event.name",
    ]
    names += ["before-call.lambda.GetFunction", "brand-new.event.name.x", "after-call.ecr.Y"]
    for _client in range(3):
        reference = _botocore_copy(session)
        client = copy.copy(session)
        assert isinstance(_trie(client), OverlayTrie)
        _same_lookups(client, reference, names)  # before any registration of its own
        _register_same((client, reference), keys, rnd, 60)
        _same_lookups(client, reference, names)
    # every client made from an unchanged session shares one snapshot of it
    first, second = copy.copy(session), copy.copy(session)
    assert _trie(first)._base is _trie(second)._base is not None


def test_registrations_stay_where_they_were_made() -> None:
    session = _session_emitter()
    name = "before-call.lambda.GetFunction"
    before = list(_trie(session).prefix_search(name))
    client, other = copy.copy(session), copy.copy(session)
    mine = _handler(1)
    client.register(name, mine)
    assert mine in _trie(client).prefix_search(name)
    assert mine not in _trie(other).prefix_search(name)  # not in a sibling
    assert list(_trie(session).prefix_search(name)) == before  # nor in the session
    # a later registration on the session reaches clients made after it, not those before
    late = _handler(2)
    session.register(name, late)
    assert late not in _trie(client).prefix_search(name)
    newer = copy.copy(session)
    assert late in _trie(newer).prefix_search(name)
    assert _trie(newer)._base is not _trie(client)._base


def test_unregistering_on_a_client_becomes_a_full_copy_with_the_same_order() -> None:
    session = _session_emitter()
    rnd = random.Random(11)
    names = _event_names(session)
    keys = ["needs-retry.lambda", "before-call.*.GetFunction", "after-call.lambda.GetFunction"]
    client, reference = copy.copy(session), _botocore_copy(session)
    registered = _register_same((client, reference), keys, rnd, 20)
    # one of the session's own handlers and one of the client's
    shared_key = "before-parameter-build.s3"
    shared = next(iter(_trie(session).prefix_search(shared_key)))
    for emitter in (client, reference):
        emitter.unregister(shared_key, shared)
        emitter.unregister(*registered[5])
    assert _trie(client)._base is None
    _same_lookups(client, reference, names)
    assert shared in _trie(session).prefix_search(shared_key)  # the session keeps it
    assert shared in _trie(copy.copy(session)).prefix_search(shared_key)


def test_a_copy_of_a_clients_hooks_is_independent_of_it() -> None:
    session = _session_emitter()
    name = "needs-retry.lambda"
    first = copy.copy(session)
    one, two = _handler(1), _handler(2)
    first.register(name, one)
    second = copy.copy(first)
    assert isinstance(_trie(second), OverlayTrie) and _trie(second)._base is _trie(first)._base
    second.register(name, two)
    assert one in _trie(second).prefix_search(name)
    assert two not in _trie(first).prefix_search(name)


def test_a_clients_cached_lookups_are_tuples() -> None:
    """botocore caches every event's lookup per client (~40 per client): tuples, not deques
    (~600 bytes each even when empty), in the same order as botocore's own lookup."""
    import asyncio
    import sys
    from collections import deque

    session = _session_emitter()
    session.register("posture.*.y", _handler(0))  # in the shared snapshot
    client, reference = copy.copy(session), _botocore_copy(session)
    for i, key in enumerate(("posture.x", "posture.x.y", "posture")):
        handler = _handler(i + 1)
        for emitter in (client, reference):
            emitter.register(key, handler)
    names = ["posture.x.y", "posture.x", "nothing.at.all"]
    for name in names:
        asyncio.run(client.emit(name))
        asyncio.run(reference.emit(name))
    assert set(client._lookup_cache) == set(reference._lookup_cache) == set(names)
    for name in names:
        mine, botocores = client._lookup_cache[name], reference._lookup_cache[name]
        assert type(mine) is tuple and type(botocores) is deque
        assert list(mine) == list(botocores), name
        assert sys.getsizeof(mine) < sys.getsizeof(botocores)
    assert len(client._lookup_cache["posture.x.y"]) == 4  # not an empty comparison
