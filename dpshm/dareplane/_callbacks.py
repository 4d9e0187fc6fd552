"""Normalising callbacks that take a ``ctx`` argument (Dareplane convention).

A Dareplane callback takes the caller's context as a parameter named ``ctx``;
one without such a parameter is called without it. :func:`as_ctx_callback`
checks a callable once, when it is registered, and returns something that can
always be called as ``cb(ctx=...)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class _NoCtx:
    """Adapter calling a callback that takes no ``ctx`` without it."""

    __slots__ = ("__wrapped__",)

    def __init__(self, cb: Callable[[], Any]) -> None:
        self.__wrapped__ = cb

    def __call__(self, ctx: Any = None) -> Any:
        return self.__wrapped__()

    def __repr__(self) -> str:
        return f"<no-ctx wrapper of {callback_name(self.__wrapped__)}>"


class _PositionalCtx(_NoCtx):
    """Adapter for a callback whose ``ctx`` parameter is positional-only."""

    __slots__ = ()

    def __call__(self, ctx: Any = None) -> Any:
        return self.__wrapped__(ctx)


def callback_name(cb: Any) -> str:
    """Return a readable name of ``cb`` (of the wrapped callable for a wrapper)."""
    inner = getattr(cb, "__wrapped__", None)
    if isinstance(cb, _NoCtx) and inner is not None:
        cb = inner
    return getattr(cb, "__qualname__", None) or repr(cb)


def as_ctx_callback(cb: Any, owner: str = "callback") -> Callable[..., Any]:
    """Return ``cb`` in a form callable as ``cb(ctx=...)``.

    Parameters
    ----------
    cb : Callable
        A callable with a parameter named ``ctx`` (other parameters need
        defaults), or one that can be called without arguments (it is wrapped
        so that ``ctx`` is dropped).
    owner : str, optional
        Who registers the callback, for error messages.

    Returns
    -------
    Callable
        ``cb`` itself or a wrapper.

    Raises
    ------
    TypeError
        If ``cb`` is not callable, is a coroutine function, or can be called
        neither with ``ctx`` alone nor without arguments.
    """
    if not callable(cb):
        raise TypeError(
            f"{owner} callback must be callable, got {cb!r} ({type(cb).__name__}); "
            "pass a function taking `ctx` or no argument"
        )
    if inspect.iscoroutinefunction(cb):
        raise TypeError(
            f"{owner} callback {callback_name(cb)} is a coroutine function, which cannot be "
            "awaited here; pass a plain function"
        )
    try:
        sig = inspect.signature(cb)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot inspect the signature of {owner} callback {cb!r} ({exc}); "
            "wrap it, e.g. `lambda ctx: f()`"
        ) from None
    param = sig.parameters.get("ctx")
    try:
        if param is not None and param.kind is inspect.Parameter.POSITIONAL_ONLY:
            if next(iter(sig.parameters)) == "ctx":
                sig.bind(None)
                return _PositionalCtx(cb)
        elif param is not None and param.kind in _NAMED:
            sig.bind(ctx=None)
            return cb
        sig.bind()
    except TypeError:
        raise TypeError(
            f"{owner} callback {callback_name(cb)}{sig} cannot be called as cb(ctx=...) "
            "nor as cb(): callbacks take one parameter named `ctx` "
            "or no required argument; rename the parameter to `ctx`, give the others "
            "defaults, or wrap it, e.g. `lambda ctx: f(ctx['a'])`"
        ) from None
    return _NoCtx(cb)
