"""Read one numpy float array out of a pickle file without unpickling it.

Why: Q16 ships its learned class embeddings as ``pickle.dump(ndarray)``. Unpickling runs
whatever the file says, so safegen never does it. Instead, :func:`pickletools.genops`
(which only *parses* opcodes) feeds a tiny stack machine that knows exactly two callables,
numpy's array rebuild (``_reconstruct``) and ``numpy.dtype``, and builds nothing but plain
values. The array comes back through :func:`numpy.frombuffer`. Any other global, opcode or
argument (object arrays, Fortran order, integer dtypes) is refused with a SafegenError.
Protocols 3 and 4 are read (Q16 wrote protocol 3); protocol 2 encodes bytes through
``_codecs.encode`` and protocol 5 rebuilds through ``_frombuffer``, calls this reader does not make.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from typing import Any

from safegen.core.errors import SafegenError

# numpy 1.x pickles name numpy.core, numpy 2.x numpy._core.
_RECONSTRUCT = {"numpy.core.multiarray _reconstruct", "numpy._core.multiarray _reconstruct"}
_NDARRAY, _DTYPE = "numpy ndarray", "numpy dtype"
_FLOAT_DTYPES = {"f2", "f4", "f8"}
_PUSH_ARG = {  # opcodes that push their argument as a plain value
    "BININT", "BININT1", "BININT2", "BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_MARK = object()


@dataclass
class _Global:
    name: str


@dataclass
class _Dtype:
    name: str
    byte_order: str = "="


@dataclass
class _EmptyArray:  # what _reconstruct returns before BUILD sets its state
    pass


def _pop_to_mark(stack: list[Any]) -> tuple[Any, ...]:
    if _MARK not in stack:
        raise SafegenError("pickle stream has a TUPLE without its MARK")
    at = len(stack) - 1 - stack[::-1].index(_MARK)
    items = tuple(stack[at + 1 :])
    del stack[at:]
    return items


def _reduce(func: Any, args: Any) -> Any:
    if isinstance(func, _Global) and func.name in _RECONSTRUCT:
        if not (len(args) == 3 and isinstance(args[0], _Global) and args[0].name == _NDARRAY):
            raise SafegenError("pickle rebuilds something other than a plain numpy.ndarray")
        return _EmptyArray()
    if isinstance(func, _Global) and func.name == _DTYPE:
        if not (len(args) == 3 and args[0] in _FLOAT_DTYPES):
            raise SafegenError(f"pickled array has dtype {args[0] if args else None!r}, expected a float dtype")
        return _Dtype(args[0])
    raise SafegenError(f"pickle calls {getattr(func, 'name', func)!r}, which safegen does not run")


def _build(obj: Any, state: Any) -> Any:
    import numpy as np

    if isinstance(obj, _Dtype):
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "=", "|")):
            raise SafegenError("pickled dtype has an unexpected state")
        obj.byte_order = state[1]
        return obj
    if isinstance(obj, _EmptyArray):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise SafegenError("pickled array has an unexpected state")
        _version, shape, dtype, fortran, raw = state
        if not (isinstance(dtype, _Dtype) and isinstance(raw, bytes) and all(isinstance(s, int) for s in shape)):
            raise SafegenError("pickled array state is not (shape, float dtype, raw bytes)")
        if fortran:
            raise SafegenError("pickled array is Fortran-ordered")
        np_dtype = np.dtype(dtype.name).newbyteorder(dtype.byte_order if dtype.byte_order != "|" else "=")
        count = int(np.prod(shape, dtype=np.int64))
        need = count * np_dtype.itemsize
        if len(raw) != need:
            raise SafegenError(f"pickled array holds {len(raw)} bytes; its shape {shape} needs {need}")
        return np.frombuffer(raw, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    raise SafegenError("pickle sets the state of an object safegen did not build")


def read_pickled_float_array(data: bytes) -> Any:
    """The float ndarray that ``pickle.dump(array)`` wrote, rebuilt from its opcodes (nothing is executed).

    Raises:
        SafegenError: the stream holds anything but one plain C-ordered float16/32/64 array.
    """
    import numpy as np

    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        ops = list(pickletools.genops(data))
    except Exception as exc:  # genops raises ValueError and friends on a broken stream
        raise SafegenError(f"not a readable pickle stream ({exc})") from None
    for op, arg, _pos in ops:
        name = op.name
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        if name in ("BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":  # protocol 4+: module and name were pushed as strings
                attr, module = stack.pop(), stack.pop()
                arg = f"{module} {attr}"
            if arg not in _RECONSTRUCT | {_NDARRAY, _DTYPE}:
                raise SafegenError(f"pickle names {arg!r}; safegen reads plain numpy arrays only")
            stack.append(_Global(arg))
        elif name in _PUSH_ARG:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(_pop_to_mark(stack))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            stack.append(_reduce(func, args))
        elif name == "BUILD":
            state, obj = stack.pop(), stack.pop()
            stack.append(_build(obj, state))
        else:
            raise SafegenError(f"pickle uses opcode {name}, which a plain numpy array does not need")
    if len(stack) != 1 or not isinstance(stack[0], np.ndarray):
        raise SafegenError("pickle does not hold exactly one numpy array")
    return stack[0]
