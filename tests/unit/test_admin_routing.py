"""The admin route table on its own: patterns, methods, path parameters, query strings."""

from __future__ import annotations

import pytest

from waypoint.admin.routing import ApiError, Request, Response, RouteTable


def table() -> RouteTable:
    t = RouteTable()
    t.add("GET", "/items", lambda r: Response(200, "list"))
    t.add("POST", "/items", lambda r: Response(201, "made"))
    t.add("GET", "/items/{item}", lambda r: Response(200, r.params["item"]))
    t.add(
        "GET",
        "/items/{item}/parts",
        lambda r: Response(200, [r.query_int("limit"), r.query_bool("full", False)]),
        query=("limit", "full"),
    )
    t.add("GET", "/metrics", lambda r: Response(200, "up 1\n", content_type="text/plain"))
    return t


def resolve(method: str, path: str, query: str = "") -> tuple[Request, Response]:
    route, request = table().resolve(method, path, query)
    return request, route.handler(request)


def refused(method: str, path: str, query: str = "") -> ApiError:
    with pytest.raises(ApiError) as info:
        table().resolve(method, path, query)
    return info.value


def test_methods_patterns_and_parameters() -> None:
    assert resolve("GET", "/items")[1].body == "list"
    assert resolve("POST", "/items")[1].status == 201
    assert resolve("HEAD", "/items")[1].body == "list"  # HEAD is served as GET
    # A parameter is one raw segment, decoded afterwards: an encoded "/" stays inside it.
    request, response = resolve("GET", "/items/a%2Fb%20c")
    assert request.params == {"item": "a/b c"} and response.body == "a/b c"
    assert refused("GET", "/items/").status == 404  # an empty segment is no parameter
    assert refused("GET", "/items/x/y").status == 404
    assert refused("GET", "/").status == 404
    wrong = refused("DELETE", "/items")
    assert (wrong.status, wrong.code, wrong.headers) == (
        405,
        "method_not_allowed",
        {"Allow": "GET, POST"},
    )
    assert refused("POST", "/items/x").headers == {"Allow": "GET"}
    assert refused("GET", "/items/a%00").code == "bad_path"
    assert refused("GET", "/items/%ff").code == "bad_path"


def test_query_strings() -> None:
    assert resolve("GET", "/items/x/parts", "limit=5&full=true")[1].body == [5, True]
    assert resolve("GET", "/items/x/parts")[1].body == [None, False]
    assert resolve("GET", "/items/x/parts", "limit=1&limit=2")[1].body == [2, False]
    assert refused("GET", "/items/x/parts", "nope=1").code == "invalid_query"
    assert refused("GET", "/items", "limit=1").code == "invalid_query"  # none declared
    for bad in ("limit=-1", "limit=x", "limit=99999999999999999999", "full=maybe"):
        request, _ = table().resolve("GET", "/items/x/parts", bad)[1], None
        with pytest.raises(ApiError) as info:
            request.query_int("limit")
            request.query_bool("full", False)
        assert info.value.code == "invalid_query"
    assert refused("GET", "/items/x/parts", "limit=%ff").code == "invalid_query"


def test_content_types() -> None:
    _, response = resolve("GET", "/metrics")
    assert (response.content_type, response.payload()) == ("text/plain", b"up 1\n")
    assert Response(200, {"a": 1}).payload() == b'{"a": 1}'
    assert Response(200, b"\x00raw", content_type="application/octet-stream").payload() == (
        b"\x00raw"
    )
    assert Response(204).payload() == b""
