"""How inputs, outputs, errors and messages become text in the system database.

Every stored value carries the name of the serializer that wrote it (the ``serialization``
column), so a row is always read back with the format it was written in, whatever the
process's current default is. Names: ``py_pickle`` (DBOS's default: base64 of a pickle),
``portable_json`` (language-neutral JSON) or a custom serializer's ``name()``. A NULL name is a
legacy DBOS row and means ``py_pickle``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import functools
import inspect
import io
import json
import logging
import pickle
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Optional

from waypoint import error
from waypoint.core.types import WorkflowSerializationFormat, WorkflowStatus
from waypoint.error import WaypointPayloadError

logger = logging.getLogger("waypoint")

PICKLE_NAME = "py_pickle"
PORTABLE_NAME = "portable_json"


class Serializer(ABC):
    """A custom value codec. Processes that share a database must agree on it."""

    @abstractmethod
    def serialize(self, data: Any) -> str:
        """The text stored for ``data``; raise if it cannot be stored."""

    @abstractmethod
    def deserialize(self, serialized_data: str) -> Any:
        """The value that ``serialize`` turned into ``serialized_data``."""

    def name(self) -> str:
        """The name stored beside each value, to pick the serializer that reads it back."""
        return "custom_serializer"


class DefaultSerializer(Serializer):
    """pickle, base64-encoded: any picklable Python value, readable only by Python."""

    def serialize(self, data: Any) -> str:
        if _holds_dbos_shaped(data):
            return base64.b64encode(_pickle_as_dbos(data)).decode()
        return base64.b64encode(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)).decode()

    def deserialize(self, serialized_data: str) -> Any:
        return _DBOSAwareUnpickler(io.BytesIO(base64.b64decode(serialized_data))).load()

    def name(self) -> str:
        return PICKLE_NAME


class _DBOSAwareUnpickler(pickle.Unpickler):
    """Reads pickles DBOS wrote (a history handed over from DBOS): its ``WorkflowStatus``
    (recorded by ``DBOS.getStatus``, ``DBOS.listWorkflows``...) becomes Waypoint's, and its
    errors the ``waypoint.error`` class of the same name, whether or not ``dbos`` is
    installed here."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "dbos" or module.startswith("dbos."):
            mapped = _from_dbos(name)
            if mapped is not None:
                return mapped
        return super().find_class(module, name)


# Errors DBOS rebuilds from constructor arguments (its ``__reduce__``) that Waypoint's class of
# the same name holds as attributes: pickled as DBOS's class with those arguments.
_DBOS_ERROR_ARGS: dict[type[BaseException], tuple[str, ...]] = {
    error.DBOSMaxStepRetriesExceeded: ("step_name", "max_retries", "errors"),
    error.DBOSStepTimeoutError: ("step_name", "timeout_seconds"),
    error.DBOSAwaitedWorkflowCancelledError: ("workflow_id",),
    error.DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded: ("workflow_id",),
    error.DBOSUnexpectedStepError: ("workflow_id", "step_id", "expected_name", "recorded_name"),
}
_DBOS_SHAPED: tuple[type, ...] = (WorkflowStatus, *_DBOS_ERROR_ARGS)


def _dbos_shaped(value: Any) -> bool:
    return isinstance(value, _DBOS_SHAPED)


def _holds_dbos_shaped(data: Any) -> bool:
    """Whether ``data`` holds what DBOS pickles as its own classes: a workflow status (the
    ``DBOS.getStatus``, ``DBOS.listWorkflows`` steps), the errors steps and waits record,
    directly, in a list, or as the ``error`` of dicts in a list (``DBOS.listWorkflowSteps``)."""
    if _dbos_shaped(data):
        return True
    if not isinstance(data, list) or not data:
        return False
    first = data[0]  # looked at alone, so that other lists cost nothing to check
    if isinstance(first, WorkflowStatus):
        return True
    if isinstance(first, dict) and "function_id" in first and "error" in first:
        return any(isinstance(v, dict) and _dbos_shaped(v.get("error")) for v in data)
    return False


class _DBOSRef:
    """Stands for a class of ``dbos`` in a pickle, without importing dbos."""

    def __init__(self, module: str, name: str, local: Callable[..., Any]) -> None:
        self.module, self.name, self.local = module, name, local

    def __reduce_ex__(self, protocol: Any) -> str:
        return self.name

    def __call__(self, *args: Any) -> Any:  # what the reference stands for, were it called
        return self.local(*args)


_DBOS_STATUS = _DBOSRef("dbos._sys_db", "WorkflowStatus", WorkflowStatus)
_DBOS_ERRORS = {cls: _DBOSRef("dbos._error", cls.__name__, cls) for cls in _DBOS_ERROR_ARGS}

_PyPickler: Any = pickle._Pickler  # its save_global is replaceable


class _AsDBOSPickler(_PyPickler):  # type: ignore[misc]
    """Pickles workflow statuses (a plain class rebuilt from its attributes) and errors as
    DBOS's classes, with DBOS's constructor arguments, so a history recorded here replays under
    DBOS; Waypoint reads them back as its own (``_DBOSAwareUnpickler``)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, WorkflowStatus):
            return (_DBOS_STATUS, (), dict(obj.__dict__))
        attrs = _DBOS_ERROR_ARGS.get(type(obj))
        if attrs is not None:
            return (_DBOS_ERRORS[type(obj)], tuple(getattr(obj, a) for a in attrs))
        return NotImplemented

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        if isinstance(obj, _DBOSRef):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _pickle_as_dbos(data: Any) -> bytes:
    buf = io.BytesIO()
    _AsDBOSPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(data)
    return buf.getvalue()


def _from_dbos(name: str) -> Any:
    if name == "WorkflowStatus":
        return WorkflowStatus
    cls = getattr(error, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return None

    def rebuild(*args: Any) -> BaseException:
        # DBOS's constructor arguments, given to Waypoint's class of that name; where the
        # two differ, the error keeps its class with DBOS's arguments as its args.
        try:
            return cls(*args)
        except TypeError:
            exc: BaseException = cls.__new__(cls)
            BaseException.__init__(exc, *args)
            return exc

    return rebuild


@dataclasses.dataclass
class PortableWorkflowError(Exception):
    """What an error stored in portable JSON reads back as, in any language."""

    message: str
    name: str
    code: Optional[Any] = None
    data: Optional[Any] = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def _portable_default(obj: Any) -> Any:
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=_dt.timezone.utc)
        utc = obj.astimezone(_dt.timezone.utc)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(obj, _dt.date):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"values of type {type(obj).__name__} cannot be stored as portable JSON")


def _check_keys(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"portable JSON maps need string keys, got a key of type {type(k).__name__}"
                )
            _check_keys(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_keys(v)


class DBOSPortableJSONSerializer(Serializer):
    """Compact JSON that any language can read (datetimes as RFC 3339 UTC, Decimal as text)."""

    def serialize(self, data: Any) -> str:
        """JSON text; ``TypeError`` for what JSON cannot hold (non-string keys, objects)."""
        _check_keys(data)
        return json.dumps(data, separators=(",", ":"), default=_portable_default, allow_nan=False)

    def deserialize(self, serialized_data: str) -> Any:
        """The JSON value (datetimes stay strings unless a workflow signature asks for them)."""
        return json.loads(serialized_data)

    def name(self) -> str:
        """``portable_json``, as DBOS names it."""
        return PORTABLE_NAME


_PICKLE = DefaultSerializer()
_PORTABLE = DBOSPortableJSONSerializer()


class Codec:
    """Encodes and decodes stored values, choosing the serializer per row by name.

    ``refuse_pickle`` is for deployments whose system database others can write to:
    unpickling a row runs whatever code its writer chose, so a codec that refuses pickle
    never unpickles a row (it raises ``WaypointPayloadError`` naming the switch), never
    writes one (its default is portable JSON, and asking for the native format is an
    error), and reads only portable JSON and custom serializers."""

    def __init__(self, default: Optional[Serializer] = None, refuse_pickle: bool = False) -> None:
        self.refuse_pickle = refuse_pickle
        if refuse_pickle and default is not None and default.name() == PICKLE_NAME:
            raise ValueError(
                f"refuse_pickle is set but the configured serializer is named {PICKLE_NAME!r}"
            )
        self.default: Serializer = default or (_PORTABLE if refuse_pickle else _PICKLE)
        self._by_name: dict[str, Serializer] = {PORTABLE_NAME: _PORTABLE}
        if not refuse_pickle:
            self._by_name[PICKLE_NAME] = _PICKLE
        self._by_name[self.default.name()] = self.default

    # -- choosing ---------------------------------------------------------------------------

    def for_format(self, fmt: Optional[WorkflowSerializationFormat | str]) -> Serializer:
        if fmt is None or fmt == WorkflowSerializationFormat.DEFAULT:
            return self.default
        if fmt in (WorkflowSerializationFormat.PORTABLE, "portable", PORTABLE_NAME):
            return _PORTABLE
        if fmt in (WorkflowSerializationFormat.NATIVE, "native"):
            if self.default.name() != PORTABLE_NAME:
                return self.default
            if self.refuse_pickle:
                raise WaypointPayloadError(
                    "the native (pickle) serialization format was asked for, but this process "
                    "refuses pickle (refuse_pickle is set): use the portable format"
                )
            return _PICKLE
        raise ValueError(f"unknown serialization format {fmt!r}")

    def by_name(self, name: Optional[str]) -> Serializer:
        if self.refuse_pickle and (name is None or name == PICKLE_NAME):
            raise WaypointPayloadError(
                "a stored value is a pickle (serialization "
                f"{name or 'NULL, a legacy DBOS row'!r}) and this process refuses to unpickle "
                "rows (refuse_pickle is set): unpickling runs code chosen by whoever wrote the row"
            )
        if name is None:
            return _PICKLE
        ser = self._by_name.get(name)
        if ser is None:
            raise WaypointPayloadError(
                f"a stored value was written with serializer {name!r}, which this process does "
                "not have; configure the same custom serializer as the writer"
            )
        return ser

    # -- values -------------------------------------------------------------------------------

    def encode(self, value: Any, ser: Serializer, what: Optional[str] = None) -> str:
        """The stored text of ``value``; the error names ``what`` it is (a step's result,
        an event) when the serializer refuses it."""
        try:
            return ser.serialize(value)
        except Exception as exc:
            subject = what or f"a value of type {type(value).__name__}"
            raise WaypointPayloadError(
                f"{subject} cannot be serialized with {ser.name()}: {type(exc).__name__}: {exc}"
            ) from exc

    def decode(self, text: Optional[str], name: Optional[str]) -> Any:
        if text is None:
            return None
        ser = self.by_name(name)
        try:
            return ser.deserialize(text)
        except Exception as exc:
            raise WaypointPayloadError(
                f"cannot deserialize a stored value written with {ser.name()}: {exc}"
            ) from exc

    # -- workflow inputs ------------------------------------------------------------------------

    def encode_inputs(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ser: Serializer,
        *,
        names: Sequence[str] = (),
        what: str = "the workflow",
    ) -> str:
        """The stored inputs. An argument that cannot be serialized is named in the error:
        by its parameter name (``names``: the positional parameters), else by position."""
        if ser.name() == PORTABLE_NAME:
            payload: Any = {"positionalArgs": list(args), "namedArgs": kwargs}
        else:
            payload = {"args": args, "kwargs": kwargs}
        try:
            return ser.serialize(payload)
        except Exception as exc:
            culprit = _unserializable_argument(args, kwargs, ser, names)
            raise WaypointPayloadError(
                f"{culprit} of {what} cannot be serialized with {ser.name()}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def decode_inputs(
        self, text: Optional[str], name: Optional[str]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        data = self.decode(text, name)
        if data is None:
            return (), {}
        if isinstance(data, dict) and ("positionalArgs" in data or "namedArgs" in data):
            return tuple(data.get("positionalArgs") or ()), dict(data.get("namedArgs") or {})
        if isinstance(data, dict) and "args" in data:
            return tuple(data["args"]), dict(data.get("kwargs") or {})
        raise WaypointPayloadError("stored workflow inputs have an unknown shape")

    # -- errors ---------------------------------------------------------------------------------

    def encode_error(self, exc: BaseException, ser: Serializer) -> str:
        if ser.name() == PORTABLE_NAME:
            return self.encode(portable_error_dict(exc), ser)
        try:
            return ser.serialize(exc)
        except Exception:
            # The exception itself cannot be serialized (unpicklable attributes, say):
            # keep its type name and message rather than losing the failure.
            return ser.serialize(Exception(f"{type(exc).__name__}: {exc}"))

    def decode_error(self, text: Optional[str], name: Optional[str]) -> BaseException:
        if text is None:
            return Exception("unknown error")
        if self.refuse_pickle and (name is None or name == PICKLE_NAME):
            # The failure still reaches the caller as a failure, without running the pickle.
            return Exception(
                f"a pickled error ({len(text)} characters) not decoded: this process refuses "
                "to unpickle rows (refuse_pickle is set)"
            )
        try:
            data = self.by_name(name).deserialize(text)
        except Exception as exc:
            logger.warning("cannot deserialize a stored error (%s); returning its text", exc)
            return Exception(text)
        if isinstance(data, BaseException):
            return data
        if isinstance(data, dict) and "message" in data and "name" in data:
            return PortableWorkflowError(
                message=str(data["message"]),
                name=str(data["name"]),
                code=data.get("code"),
                data=data.get("data"),
            )
        return Exception(str(data))


def positional_names(func: Callable[..., Any], skip_first: bool = False) -> tuple[str, ...]:
    """The names of ``func``'s positional parameters (without ``self``/``cls`` if
    ``skip_first``), to name an argument in an error; empty if there is no signature.
    Cached: every start asks, and ``inspect.signature`` costs more than the rest of it."""
    try:
        return _positional_names(func, skip_first)
    except TypeError:  # unhashable callable: not worth caching
        return _positional_names.__wrapped__(func, skip_first)


@functools.lru_cache(maxsize=1024)
def _positional_names(func: Callable[..., Any], skip_first: bool) -> tuple[str, ...]:
    if isinstance(func, (classmethod, staticmethod)):
        skip_first, func = isinstance(func, classmethod), func.__func__
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return ()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return tuple(names[1:] if skip_first else names)


def _unserializable_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], ser: Serializer, names: Sequence[str]
) -> str:
    """Which argument ``ser`` cannot serialize on its own: ``argument 'x'`` (or
    ``argument 2`` past the named ones); ``an argument`` if each one alone can be."""
    candidates = [
        (f"argument {names[i]!r}" if i < len(names) else f"argument {i + 1}", value)
        for i, value in enumerate(args)
    ] + [(f"argument {key!r}", value) for key, value in kwargs.items()]
    for label, value in candidates:
        try:
            ser.serialize([value] if ser.name() == PORTABLE_NAME else value)
        except Exception:
            return label
    return "an argument"


def portable_error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, PortableWorkflowError):
        return {"name": exc.name, "message": exc.message, "code": exc.code, "data": exc.data}
    code = getattr(exc, "dbos_error_code", None)
    message = getattr(exc, "message", None)
    return {
        "name": type(exc).__name__,
        "message": str(message) if message is not None else str(exc),
        "code": code if isinstance(code, (int, str)) or code is None else str(code),
        "data": None,
    }


def coerce_portable_args(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Turn JSON strings back into ``datetime``/``date`` where the signature asks for them."""
    try:
        hints = typing.get_type_hints(func)
        sig = inspect.signature(func)
    except Exception:
        return args, kwargs
    if not any(_datelike(h) for h in hints.values()):
        return args, kwargs
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return args, kwargs
    for pname, value in list(bound.arguments.items()):
        hint = hints.get(pname)
        if hint is not None and isinstance(value, str):
            bound.arguments[pname] = _coerce(value, hint)
    return tuple(bound.args), dict(bound.kwargs)


def _datelike(hint: Any) -> bool:
    return _target(hint) is not None


def _target(hint: Any) -> Optional[type]:
    if hint in (_dt.datetime, _dt.date):
        return typing.cast(type, hint)
    for arg in typing.get_args(hint):
        if arg in (_dt.datetime, _dt.date):
            return typing.cast(type, arg)
    return None


def _coerce(value: str, hint: Any) -> Any:
    target = _target(hint)
    try:
        if target is _dt.datetime:
            return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if target is _dt.date:
            return _dt.date.fromisoformat(value)
    except ValueError:
        return value
    return value
