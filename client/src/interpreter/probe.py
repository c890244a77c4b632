# pycache interpreter probe: prints one marker line followed by a JSON object.
# Kept valid Python 2 so that an old interpreter still answers with its version.
import sys

_out = {"version": list(sys.version_info[:3])}
# `python -c` puts the current directory first on sys.path; `python -m compileall` imports
# nothing of the probe's from there, so neither does the probe: a project's own `json.py` or
# `types.py` must not shadow the interpreter's modules.
_head = None
if sys.path and not getattr(getattr(sys, "flags", None), "safe_path", False):
    _head = sys.path.pop(0)
try:
    import importlib.util
    import json
    import os
    import warnings

    _out["implementation"] = sys.implementation.name
    _out["magic"] = importlib.util.MAGIC_NUMBER.hex()
    _out["cache_tag"] = sys.implementation.cache_tag
    _out["optimize"] = sys.flags.optimize
    _out["pycache_prefix"] = getattr(sys, "pycache_prefix", None)
    _out["stdout_encoding"] = sys.stdout.encoding or sys.getdefaultencoding()
    _out["sys_path"] = ([_head] if _head is not None else []) + sys.path
    _out["release"] = "%d.%d.%d%s%d" % tuple(sys.version_info)
    _out["implementation_version"] = "%d.%d.%d%s%d" % tuple(sys.implementation.version)
    _out["real_executable"] = sys.executable or None
    _out["safe_path"] = bool(getattr(sys.flags, "safe_path", False))
    _out["source_hash"] = importlib.util.source_hash(b"pycache probe").hex()
    _out["recursion_limit"] = sys.getrecursionlimit()
    try:
        _positions = list(compile("x\n", "<probe>", "exec").co_positions())
        # no_debug_ranges keeps line numbers but drops columns.
        _out["debug_ranges"] = any(p[2] is not None for p in _positions)
    except AttributeError:
        _out["debug_ranges"] = None
    _out["warnings_filters"] = repr(
        [
            (a, getattr(m, "pattern", m), c.__name__, getattr(mod, "pattern", mod), n)
            for (a, m, c, mod, n) in warnings.filters
        ]
    )
    _out["dev_mode"] = bool(getattr(sys.flags, "dev_mode", False))
    _out["bytes_warning"] = sys.flags.bytes_warning
    # 3.9's pgen parser (-X oldparser, PYTHONOLDPARSER) fails differently on deep nesting; only
    # the PEG parser accepts parenthesized context managers there.
    _out["old_parser"] = False
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 9):
        try:
            compile("with (a as b, c as d): pass", "<probe>", "exec")
        except SyntaxError:
            _out["old_parser"] = True
    try:
        # compileall -j: 3.10+ falls back to serial when this refuses (Emscripten, few semaphores).
        if sys.version_info >= (3, 10):
            from concurrent.futures.process import _check_system_limits

            _check_system_limits()
        else:
            from concurrent.futures import ProcessPoolExecutor  # noqa: F401
        _out["process_pool"] = True
    except (ImportError, NotImplementedError):
        _out["process_pool"] = False
    _out["hardlinks"] = hasattr(os, "link")
    _get_digits = getattr(sys, "get_int_max_str_digits", None)
    _out["int_max_str_digits"] = _get_digits() if _get_digits else None
    _seed = os.environ.get("PYTHONHASHSEED")
    _out["hash_seed"] = None if _seed in (None, "", "random") else _seed
    _text = json.dumps(_out)
except Exception as e:  # an old or unusual interpreter: report its version and the error
    _error = ("%s: %s" % (e.__class__.__name__, e)).replace("\\", "/").replace('"', "'").replace("\n", " ")
    _text = '{"version": [%d, %d, %d], "error": "%s"}' % (tuple(sys.version_info[:3]) + (_error,))
sys.stdout.write("\n@@PYCACHE-PROBE@@" + _text + "\n")
sys.stdout.flush()
