"""check_text_params: a NUL is refused in every shape of text parameter, including the
ones its fast path (exact ``str``, ``int``, None) does not take."""

import enum

import pytest

from waypoint.storage.errors import InvalidTextError
from waypoint.storage.sql_base import check_text_params


class Colour(str, enum.Enum):
    BAD = "re\x00d"


@pytest.mark.parametrize(
    "value",
    ["a\x00b", Colour.BAD, ["ok", "a\x00b"], ("a\x00b",)],
    ids=["str", "str-subclass", "list", "tuple"],
)
def test_a_nul_is_refused_and_named(value: object) -> None:
    with pytest.raises(InvalidTextError) as caught:
        check_text_params({"id": "fine", "bad": value, "n": 3})
    assert caught.value.parameter == "bad"


def test_values_without_text_pass() -> None:
    check_text_params(
        {"s": "plain", "n": 12, "none": None, "flag": True, "b": b"\x00", "f": 1.5, "l": [1, "x"]}
    )
