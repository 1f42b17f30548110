"""The kernel clock's discipline, read through adjtimex(2): the one place that calls it.

Read-only: the struct goes in zeroed, so its `modes` is 0 and the call changes nothing (which
is why any user may make it). One call is a few microseconds and never blocks, so the event
loop makes it directly. The C library's `adjtimex` is reached through ctypes; tests hand
`read` a `Syscall` of their own instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

from exporter.codecs import timex
from exporter.codecs.timex import Timex

# Fills the buffer (a zeroed struct timex), returns the clock state, raises OSError on -1.
Syscall = Callable[[bytearray], int]

# What a sandbox or a seccomp filter answers for a system call it does not allow.
_NOT_ALLOWED = {errno.ENOSYS: "ENOSYS", errno.EPERM: "EPERM", errno.EACCES: "EACCES"}

NATIVE = timex.layout(ctypes.sizeof(ctypes.c_long), sys.byteorder)


class ClockUnavailable(Exception):
    """This platform cannot tell: not Linux, or adjtimex is not allowed. Says why, for people."""


def system_adjtimex(platform: str = sys.platform) -> Syscall:
    """The C library's adjtimex, or a Syscall saying why there is none on `platform`."""
    if platform != "linux":
        return _unavailable(f"adjtimex is a Linux system call and this platform is {platform}")
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), "adjtimex", None)
    except OSError as exc:  # a static or unusual build: no C library to load
        return _unavailable(f"the C library cannot be loaded: {exc}")
    if function is None:
        return _unavailable("the C library has no adjtimex")
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int

    def call(buffer: bytearray) -> int:
        state = function((ctypes.c_char * len(buffer)).from_buffer(buffer))
        if state == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(state)

    return call


def _unavailable(why: str) -> Syscall:
    def call(buffer: bytearray) -> int:
        raise ClockUnavailable(why)

    return call


def read(syscall: Syscall, layout: timex.Layout = NATIVE) -> Timex:
    """The kernel clock's discipline now; ClockUnavailable where the platform cannot tell.

    Any other failure is a bug (a wrong buffer, say) and raises RuntimeError, so that the
    runner reports it as an internal error with its traceback.
    """
    buffer = bytearray(layout.size)
    try:
        state = syscall(buffer)
    except OSError as exc:
        if exc.errno in _NOT_ALLOWED:
            raise ClockUnavailable(f"adjtimex is not allowed here ({_NOT_ALLOWED[exc.errno]}: "
                                   f"{exc.strerror}), a sandbox or seccomp filter") from None
        raise RuntimeError(f"adjtimex failed: {exc}") from exc
    clock = timex.parse(bytes(buffer), state, layout)
    # Linux always reports 500 ppm here: anything else means the layout is not this kernel's
    # (x32, say, whose longs are 8 bytes behind a 4-byte C long), and every value would be
    # read from the wrong place.
    if round(clock.tolerance_ratio * 1e6, 3) != timex.TOLERANCE_PPM:
        raise ClockUnavailable(f"adjtimex answered in a layout other than {layout.name} "
                               f"(tolerance {clock.tolerance_ratio * 1e6:g} ppm, not "
                               f"{timex.TOLERANCE_PPM})")
    return clock
