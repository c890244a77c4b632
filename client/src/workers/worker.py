# pycache compile worker: runs inside the target interpreter, started as `python -c <this file>`.
#
# Goal: the bytes of every .pyc body equal those of a serial `python -m compileall` run of the
# same interpreter. Marshal output depends on reference counts (an object with one reference is
# written without FLAG_REF), so the set of live interned strings in this process must match the
# one inside `python -m compileall` while it compiles. Hence:
# - compileall itself runs as `__main__` through runpy, exactly as `-m` does, and its real `main()`
#   parses a real command line (`-q <a file>`), importing what it imports (argparse, ...);
#   a one-shot hook on `ArgumentParser.parse_args` then swaps `compile_file` for the serve loop,
#   so jobs run under the same frames (`main()` -> loop -> `py_compile.compile`);
# - every name defined here starts with `_pcw_`, so it cannot collide with a name in a compiled file;
# - jobs go through `py_compile.compile` itself; only its final `_write_atomic` is swapped for a
#   capture, after marshal has already produced the bytes.
# Protocol (little endian), on private duplicates of fds 0 and 1; fd 1 is then pointed at stderr so
# stray prints cannot corrupt it:
#   worker -> client once: READY marker
#   request:  u32 len, u64 id, i32 optimize, u32 source_len, u32 dfile_len (0xFFFFFFFF = none),
#             source, dfile (UTF-8)
#   response: u32 len, u64 id, u8 kind (0 compiled, 1 failed, 2 raised), u32 warnings_len,
#             u32 a_len, u32 b_len, warnings, a, b
#             compiled: a = the whole pyc (its header holds the mtime and size py_compile stat'ed
#             after reading), b = the source bytes py_compile read (the client checks them
#             against the bytes it hashed); failed: a = message; raised: a = class name, b = text
import os
import sys

_pcw_in = os.fdopen(os.dup(0), "rb")
_pcw_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
_pcw_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_pcw_null, 0)
os.close(_pcw_null)


def _pcw_serve(*_pcw_args, **_pcw_kwargs):
    global _pcw_served
    _pcw_served = True
    import io
    import struct
    import py_compile
    import importlib._bootstrap_external as _pcw_bootstrap

    _pcw_head = struct.Struct("<QiII")
    _pcw_reply = struct.Struct("<IQBIII")
    _pcw_timestamp = py_compile.PycInvalidationMode.TIMESTAMP
    _pcw_write_atomic = _pcw_bootstrap._write_atomic
    _pcw_cfile = os.path.join(
        os.environ.get("PYCACHE_WORKER_DIR") or os.getcwd(), "pycache-worker-%d.pyc" % os.getpid()
    )
    _pcw_captured = []
    _pcw_stderr = io.StringIO()
    _pcw_encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    _pcw_errors = getattr(sys.stderr, "errors", None) or "backslashreplace"
    _pcw_real_stderr = sys.stderr
    # CPython's pgen parser (3.8, and 3.9 with -X oldparser) writes `s_push: parser stack
    # overflow` with C stdio straight to fd 2: capture fd 2 around each compile, so the line is
    # part of the compile's warnings text, in order, and replayed from the cache.
    _pcw_fd2 = None
    if sys.implementation.name == "cpython" and sys.version_info < (3, 10):
        _pcw_fd2 = os.open(_pcw_cfile + ".stderr", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.unlink(_pcw_cfile + ".stderr")
        _pcw_fd2_saved = os.dup(2)

    def _pcw_capture(_pcw_path, _pcw_data, _pcw_mode=0o666):
        _pcw_captured.append(_pcw_data)

    _pcw_read = []
    _pcw_loader_class = _pcw_bootstrap.FileLoader
    _pcw_get_data = _pcw_loader_class.get_data

    def _pcw_record_read(self, path):
        # py_compile's first read is the source; later ones are modules the compile imports
        # (a coding cookie's codec, traceback on an error).
        _pcw_data = _pcw_get_data(self, path)
        if not _pcw_read:
            _pcw_read.append(_pcw_data)
        return _pcw_data

    _pcw_out.write(b"\x00PYCACHE-WORKER-READY\n")
    _pcw_out.flush()
    while True:
        _pcw_len = _pcw_in.read(4)
        if len(_pcw_len) < 4:
            return True
        _pcw_frame = _pcw_in.read(int.from_bytes(_pcw_len, "little"))
        _pcw_id, _pcw_opt, _pcw_slen, _pcw_dlen = _pcw_head.unpack_from(_pcw_frame)
        _pcw_at = _pcw_head.size
        fullname = os.fsdecode(_pcw_frame[_pcw_at:_pcw_at + _pcw_slen])
        _pcw_at += _pcw_slen
        dfile = None
        if _pcw_dlen != 0xFFFFFFFF:
            dfile = os.fsdecode(_pcw_frame[_pcw_at:_pcw_at + _pcw_dlen])
        del _pcw_frame
        _pcw_kind = 0
        _pcw_a = _pcw_b = b""
        sys.stderr = _pcw_stderr
        _pcw_bootstrap._write_atomic = _pcw_capture
        _pcw_loader_class.get_data = _pcw_record_read
        if _pcw_fd2 is not None:
            os.dup2(_pcw_fd2, 2)
        try:
            py_compile.compile(fullname, _pcw_cfile, dfile, True, optimize=_pcw_opt,
                               invalidation_mode=_pcw_timestamp)
            _pcw_a = _pcw_captured.pop()
            _pcw_b = _pcw_read[0] if _pcw_read else b""
        except py_compile.PyCompileError as err:
            _pcw_kind = 1
            _pcw_a = err.msg.encode("utf-8", "backslashreplace")
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            _pcw_kind = 2
            _pcw_a = e.__class__.__name__.encode("utf-8", "backslashreplace")
            _pcw_b = str(e).encode("utf-8", "backslashreplace")
        finally:
            if _pcw_fd2 is not None:
                os.dup2(_pcw_fd2_saved, 2)
            _pcw_bootstrap._write_atomic = _pcw_write_atomic
            _pcw_loader_class.get_data = _pcw_get_data
            _pcw_read.clear()
            sys.stderr = _pcw_real_stderr
            _pcw_captured.clear()
        _pcw_warn = b""
        if _pcw_fd2 is not None and os.lseek(_pcw_fd2, 0, os.SEEK_CUR):
            _pcw_warn = os.pread(_pcw_fd2, os.lseek(_pcw_fd2, 0, os.SEEK_CUR), 0)
            os.ftruncate(_pcw_fd2, 0)
            os.lseek(_pcw_fd2, 0, os.SEEK_SET)
        if _pcw_stderr.tell():
            _pcw_warn += _pcw_stderr.getvalue().encode(_pcw_encoding, _pcw_errors)
            _pcw_stderr.seek(0)
            _pcw_stderr.truncate()
        _pcw_out.write(_pcw_reply.pack(
            _pcw_reply.size - 4 + len(_pcw_warn) + len(_pcw_a) + len(_pcw_b),
            _pcw_id, _pcw_kind, len(_pcw_warn), len(_pcw_a), len(_pcw_b)))
        _pcw_out.write(_pcw_warn)
        _pcw_out.write(_pcw_a)
        _pcw_out.write(_pcw_b)
        _pcw_out.flush()
        del fullname, dfile, _pcw_a, _pcw_b, _pcw_warn


def _pcw_hook(self, *_pcw_args, **_pcw_kwargs):
    global compile_file, _pcw_original_compile_file
    _pcw_parser_class.parse_args = _pcw_parse_args
    _pcw_result = _pcw_parse_args(self, *_pcw_args, **_pcw_kwargs)
    _pcw_original_compile_file = compile_file
    compile_file = _pcw_serve
    return _pcw_result


def _pcw_main():
    global _pcw_parser_class, _pcw_parse_args
    import runpy
    import argparse

    _pcw_parser_class = argparse.ArgumentParser
    _pcw_parse_args = _pcw_parser_class.parse_args
    _pcw_parser_class.parse_args = _pcw_hook
    sys.argv = [sys.argv[0], "-q", sys.executable]
    try:
        runpy._run_module_as_main("compileall")
    except SystemExit:
        pass
    _pcw_parser_class.parse_args = _pcw_parse_args


try:
    _pcw_main()
    if not globals().get("_pcw_served"):
        # compileall's main() did not take the expected path; serve without it.
        _pcw_serve()
except KeyboardInterrupt:
    pass
_pcw_out.flush()
os._exit(0)
