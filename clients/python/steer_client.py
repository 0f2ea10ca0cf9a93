"""A small, dependency-free Python client for Steer's line-delimited JSON protocol (docs/protocol.md).

    from steer_client import SteerClient
    with SteerClient(port=7878, token="admin-secret") as steer:
        steer.upsert([{"id": 1, "vector": [0.1, 0.2], "tags": ["comedy"], "title": "A"}])
        hits = steer.search([0.1, 0.2], k=5)

Errors from the server raise `SteerError` with the wire `code` and `message`. `collection=` (on the
client or per call through `request`) addresses a collection or an alias (docs/protocol.md
"Collections and aliases"); without it the server's default collection answers.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Filter", "Hits", "SteerClient", "SteerError", "encode_vector_b64"]


class Hits(list):
    """A search answer: a list of hits (dicts with `id`, `score`, `title`, `tags`) that also carries
    what the response said about itself: `generation` (the index generation that answered),
    `collection` (the collection that answered, an alias resolved), through a router
    (`steer route`), `partial` and `missing_shards` when some shard did not answer, and `explain`
    (the plan that ran) when the search asked for it."""

    generation: str | None
    collection: str | None
    partial: bool
    missing_shards: list[int]
    explain: dict | None

    def __init__(self, hits: Iterable[dict], response: dict):
        super().__init__(hits)
        self.generation = response.get("generation")
        self.collection = response.get("collection")
        self.partial = bool(response.get("partial", False))
        self.missing_shards = list(response.get("missing_shards", []))
        self.explain = response.get("explain")


class SteerError(Exception):
    """A failed request: `code` is the wire error code (e.g. `dimension_mismatch`)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def encode_vector_b64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes, base64 (the `vector_b64` field)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# Ops that take `collection` (docs/protocol.md).
COLLECTION_OPS = frozenset({"stats", "upsert", "delete", "get", "search", "recommend", "encode", "swap"})


class SteerClient:
    """One TCP connection. Not thread-safe: use one client per thread. `pipeline` sends many requests
    before reading their responses (they come back in request order). `collection`: the collection (or
    alias) every item, search, stats and swap op addresses unless a call names another."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7878,
        timeout: float = 30.0,
        token: str | None = None,
        tls: ssl.SSLContext | bool = False,
        collection: str | None = None,
    ):
        """`tls`: True for the system's trusted certificates, or an `ssl.SSLContext` (for example
        `ssl.create_default_context(cafile="cert.pem")` for a server started with `--tls-cert`)."""
        self.token = token
        self.collection = collection
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            context = tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context()
            self._sock: socket.socket = context.wrap_socket(raw, server_hostname=host)
        else:
            self._sock = raw
        self._reader = self._sock.makefile("rb")

    # -- plumbing -----------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._sock.close()

    def __enter__(self) -> SteerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _line(request: dict) -> bytes:
        return json.dumps(request, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"

    def _read(self) -> dict:
        line = self._reader.readline()
        if not line:
            raise SteerError("unavailable", "the server closed the connection")
        return json.loads(line)

    @staticmethod
    def _check(response: dict) -> dict:
        if response.get("ok") is True:
            return response
        error = response.get("error") or {}
        raise SteerError(error.get("code", "internal"), error.get("message", "malformed error response"))

    def send_raw(self, line: bytes) -> dict:
        """Sends one raw line (a newline is appended if missing) and returns the parsed response."""
        if not line.endswith(b"\n"):
            line += b"\n"
        self._sock.sendall(line)
        return self._read()

    def request(self, op: str, **fields: Any) -> dict:
        """Sends `{"op": op, **fields}` and returns the response; raises `SteerError` when not ok."""
        request = {"op": op}
        request.update({key: value for key, value in fields.items() if value is not None})
        # The key goes with every op: with keys configured, reads need a read (or admin) key too.
        if self.token is not None and "token" not in request:
            request["token"] = self.token
        if self.collection is not None and op in COLLECTION_OPS and "collection" not in request:
            request["collection"] = self.collection
        self._sock.sendall(self._line(request))
        return self._check(self._read())

    def pipeline(self, requests: Iterable[dict]) -> list[dict]:
        """Sends every request, then reads all responses (raw, unchecked), in order."""
        payload = b"".join(self._line(request) for request in requests)
        count = payload.count(b"\n")
        self._sock.sendall(payload)
        return [self._read() for _ in range(count)]

    @staticmethod
    def _filter(
        tags_any: Sequence[str] | None, tags_none: Sequence[str] | None, expression: dict | None = None
    ) -> dict | None:
        """The `filter` object: the tag lists and the expression node's fields side by side."""
        if not tags_any and not tags_none and not expression:
            return None
        result: dict = {}
        if tags_any:
            result["tags_any"] = list(tags_any)
        if tags_none:
            result["tags_none"] = list(tags_none)
        if expression:
            result.update(expression)
        return result

    # -- operations ---------------------------------------------------------------------------------

    def ping(self) -> None:
        self.request("ping")

    def stats(self) -> dict:
        return self.request("stats")

    def upsert(self, items: Sequence[dict]) -> int:
        """Items: {"id", "vector", "tags"?, "title"?, "attributes"?}. Returns how many were written."""
        return self.request("upsert", items=list(items), token=self.token)["upserted"]

    def delete(self, ids: Sequence[int | str]) -> int:
        return self.request("delete", ids=list(ids), token=self.token)["deleted"]

    def get(self, ids: Sequence[int | str]) -> list[dict]:
        return self.request("get", ids=list(ids))["items"]

    def declare_index(self, attr: str, kind: str) -> dict:
        """Declares a payload index (admin; `kind` is "keyword" or "numeric"). Through a router every
        replica of every shard declares it. Returns the answer: `attr`, `kind`, `entries` (and `replicas`
        through a router)."""
        return self.request("declare_index", attr=attr, kind=kind, token=self.token)

    def search(
        self,
        vector: Sequence[float],
        k: int = 10,
        *,
        b64: bool = False,
        nprobe: int | None = None,
        ef_search: int | None = None,
        tags_any: Sequence[str] | None = None,
        tags_none: Sequence[str] | None = None,
        filter: dict | None = None,
        explain: bool | None = None,
    ) -> Hits:
        """The best `k` hits; `Hits.partial` tells whether every shard answered (through a router).

        `filter` is a filter expression node (build it with `Filter`); with `explain=True`,
        `Hits.explain` says which plan ran.
        """
        fields: dict = {
            "k": k,
            "nprobe": nprobe,
            "ef_search": ef_search,
            "filter": self._filter(tags_any, tags_none, filter),
            "explain": explain,
        }
        if b64:
            fields["vector_b64"] = encode_vector_b64(vector)
        else:
            fields["vector"] = list(vector)
        response = self.request("search", **fields)
        return Hits(response["hits"], response)

    def search_batch(self, vectors: Sequence[Sequence[float]], k: int = 10, **options: Any) -> list[Hits]:
        """One `Hits` per vector, each carrying the response's `generation`/`partial`/`missing_shards`."""
        response = self.request("search", vectors=[list(v) for v in vectors], k=k, **options)
        return [Hits(hits, response) for hits in response["results"]]

    def recommend(
        self,
        history: Sequence[int | str],
        prompt: str | None = None,
        k: int = 10,
        *,
        exclude_history: bool | None = None,
        constraints: str | None = None,
        tags_any: Sequence[str] | None = None,
        tags_none: Sequence[str] | None = None,
        filter: dict | None = None,
        explain: bool | None = None,
    ) -> dict:
        """Returns the whole response: `hits`, `clauses`, `unknown_history` (and `explain`)."""
        return self.request(
            "recommend",
            history=list(history),
            prompt=prompt,
            k=k,
            exclude_history=exclude_history,
            constraints=constraints,
            filter=self._filter(tags_any, tags_none, filter),
            explain=explain,
        )

    def encode(
        self, history: Sequence[int | str], prompt: str | None = None, constraints: str | None = None
    ) -> list[float]:
        return self.request("encode", history=list(history), prompt=prompt, constraints=constraints)["vector"]

    # -- collections and aliases --------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        dimension: int | None = None,
        *,
        metric: str | None = None,
        index_spec: str | None = None,
        embedding_version: str | None = None,
        checkpoint: str | None = None,
    ) -> dict:
        """Returns the new collection's description (`dimension`, `metric`, `index_spec`, …)."""
        return self.request(
            "create_collection",
            name=name,
            dimension=dimension,
            metric=metric,
            index_spec=index_spec,
            embedding_version=embedding_version,
            checkpoint=checkpoint,
        )

    def list_collections(self) -> dict:
        """`collections` (the default first) and `aliases` ({alias: collection})."""
        return self.request("list_collections")

    def describe_collection(self, name: str) -> dict:
        return self.request("describe_collection", name=name)

    def drop_collection(self, name: str) -> None:
        self.request("drop_collection", name=name)

    def alias(self, alias: str, collection: str) -> str | None:
        """Points `alias` at `collection`; returns the collection it pointed to before (None if new)."""
        return self.request("alias", alias=alias, collection=collection)["previous"]

    def delete_alias(self, alias: str) -> str:
        """Removes `alias`; returns the collection it pointed to."""
        return self.request("delete_alias", alias=alias)["collection"]


class Filter:
    """Builders for filter expression nodes (docs/protocol.md, "Filter expressions").

    >>> Filter.and_(Filter.tag("comedy"), Filter.attr("year", gte=1990, lt=2000))
    {'and': [{'tag': 'comedy'}, {'attr': 'year', 'gte': 1990, 'lt': 2000}]}
    """

    OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")

    @staticmethod
    def and_(*nodes: dict) -> dict:
        return {"and": list(nodes)}

    @staticmethod
    def or_(*nodes: dict) -> dict:
        return {"or": list(nodes)}

    @staticmethod
    def not_(node: dict) -> dict:
        return {"not": node}

    @staticmethod
    def tag(name: str) -> dict:
        return {"tag": name}

    @staticmethod
    def attr(path: str, **operators: Any) -> dict:
        """An attribute leaf; `in`/`nin` may be passed as `in_`/`nin_` (Python keywords)."""
        node: dict = {"attr": path}
        for key, value in operators.items():
            name = key.rstrip("_")
            if name not in Filter.OPERATORS:
                raise ValueError(
                    f"unknown filter operator {key!r} (expected one of {', '.join(Filter.OPERATORS)})"
                )
            node[name] = list(value) if name in ("in", "nin") else value
        return node
