"""The ``satjax`` command (and ``python -m satjax``): :mod:`satjax.cli` behind two guards that
must hold from the first instruction on, before the command line itself is imported.

* Ctrl-C at any moment ends with the one line ``error: interrupted`` (or a command's own line,
  e.g. where ``train`` saved its state) and exit code 130: during start-up and imports, inside
  typer's own dispatch (which exits 130 silently), inside a command (:func:`satjax.cli.handled`),
  and where Python cannot raise it (a garbage-collection or exit callback of a library, which
  would print "Exception ignored ... KeyboardInterrupt" and carry on). Once the command is over,
  Ctrl-C is ignored and the process ends with the command's exit code (:func:`main`).
* Output survives any terminal encoding: characters the stream cannot encode are written in
  ASCII (:func:`satjax.report.ascii_fallback`).
"""

import os
import signal
import sys

EXIT_INTERRUPTED = 130


def _say_interrupted() -> None:
    try:
        sys.stderr.write("error: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _unraisable(hook):
    def handle(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) or \
                unraisable.exc_type is KeyboardInterrupt:
            _say_interrupted()
            os._exit(EXIT_INTERRUPTED)
        hook(unraisable)

    return handle


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write(f"{code}\n")  # sys.exit("message") semantics
    except (OSError, ValueError):
        pass
    return 1


def main() -> int:
    """Run the command line and end the process with its exit code.

    The process ends through ``os._exit`` after flushing the standard streams (every file a
    command writes is already fsynced): a Ctrl-C during the interpreter's own shutdown could
    otherwise still kill it with SIGINT instead of exit code 130."""
    code = 0
    try:
        sys.unraisablehook = _unraisable(sys.unraisablehook)
        from satjax.report import ascii_fallback

        ascii_fallback()
        from satjax import cli

        try:
            cli.app()
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
            if code == EXIT_INTERRUPTED and not cli.interrupt_reported():
                _say_interrupted()
        finally:  # the command is over: a Ctrl-C now would only kill the interpreter's exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say_interrupted()
        code = EXIT_INTERRUPTED
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 4  # the result could not be written to stdout
    os._exit(code)


if __name__ == "__main__":
    main()
