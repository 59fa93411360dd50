"""One error line for every failure of a ``rud_*`` command, shared by all of them.

A command's entry function parses its arguments and hands the work to :func:`run_command`, which turns
what can go wrong for a user (bad input, a full disk, a read-only folder, a file that vanished) into
``prog: reason`` on stderr and exit status 1, instead of a traceback.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

OS_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or write to another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or write to another disk",
    errno.EACCES: "permission denied; make it readable/writable for you or choose another folder",
    errno.EPERM: "operation not permitted; make it writable for you or choose another folder",
    errno.EROFS: "read-only file system; write to another folder",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error; check the disk",
}


def describe_os_error(err: OSError) -> str:
    """``<file>: <what happened and what to do>`` for an operating-system error."""
    what = OS_ADVICE.get(err.errno) if err.errno is not None else None
    what = what or (err.strerror or str(err) or type(err).__name__)
    where = err.filename if err.filename is not None else None
    if where is None:
        return what if err.errno in OS_ADVICE or not str(err) else str(err)
    return f"{where}: {what}"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_command(prog: str, action: Callable[[], int | None]) -> int:
    """Run ``action`` and return its exit status; any failure becomes one line ``prog: ...`` and status 1.

    Errors that list several problems (``problems`` attribute, e.g. a dataset's) print one line each.
    """
    try:
        status = action()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; a rerun continues where it is safe to", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"{prog}: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError) as err:
        lines = [str(p) for p in getattr(err, "problems", [])]
        print(f"{prog}: {first_line(err)}", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - still one line, but say it is unexpected
        print(f"{prog}: unexpected {type(err).__name__}: {first_line(err)}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)
