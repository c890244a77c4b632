# pycache exclusion helper: answers compileall's `-x` question, `rx.search(fullname)`, with the
# target interpreter's own `re`. Started as `python -c <this file> PATTERN`, so the pattern is
# decoded from argv exactly as compileall's argparse sees it.
#
# The pattern is compiled the way compileall's main() does (`args.rx = re.compile(args.rx)`),
# from a frame whose file and line are that statement's in the interpreter's compileall.py, so a
# warning (FutureWarning "Possible nested set", DeprecationWarning) is formatted byte for byte as
# compileall prints it, under the same warning filters and with `__name__ == "__main__"`.
# Protocol (little endian), on private duplicates of fds 0 and 1:
#   helper -> client: b"R" + u32 len + warnings text (stderr bytes), or b"D" + u32 len + reason
#                     (the pattern fails to compile: compileall itself must report it)
#   client -> helper: u32 len + path bytes;  helper -> client: b"1" (excluded) or b"0"
import os
import sys

_pcx_in = os.fdopen(os.dup(0), "rb")
_pcx_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)


def _pcx_send(kind, text):
    data = text.encode(getattr(sys.stderr, "encoding", None) or "utf-8", "backslashreplace")
    _pcx_out.write(kind + len(data).to_bytes(4, "little") + data)
    _pcx_out.flush()


def _pcx_main():
    import io
    import importlib.util
    import re

    pattern = sys.argv[1]
    spec = importlib.util.find_spec("compileall")
    filename = spec.origin
    with open(filename, "rb") as f:
        lines = f.read().split(b"\n")
    statement = b"args.rx = re.compile(args.rx)"
    lineno = next(i + 1 for i, line in enumerate(lines) if line.strip() == statement)
    code = compile("\n" * (lineno - 1) + "rx = re.compile(pattern)\n", filename, "exec")
    namespace = {"__name__": "__main__", "re": re, "pattern": pattern}
    captured = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = captured
    try:
        exec(code, namespace)
    except BaseException as e:
        sys.stderr = real_stderr
        _pcx_send(b"D", "%s: %s" % (e.__class__.__name__, e))
        return
    sys.stderr = real_stderr
    search = namespace["rx"].search
    _pcx_send(b"R", captured.getvalue())
    while True:
        head = _pcx_in.read(4)
        if len(head) < 4:
            return
        fullname = os.fsdecode(_pcx_in.read(int.from_bytes(head, "little")))
        _pcx_out.write(b"1" if search(fullname) else b"0")
        _pcx_out.flush()


_pcx_main()
_pcx_out.flush()
os._exit(0)
