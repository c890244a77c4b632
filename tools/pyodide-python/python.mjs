// A `python` command on Pyodide (CPython compiled to WebAssembly) under Node, for pycache's tests
// only: it lets the parity suites run CPython versions that are not installed on the machine.
// Never used by the product.
//
// Usage: node python.mjs PYODIDE_DIR [python options] (-c CMD | -m MOD | SCRIPT | -) [ARGS...]
// (the wrapper written by install.sh passes PYODIDE_DIR and sets PYODIDE_PYTHON_EXECUTABLE).
//
// What it adds to a bare `loadPyodide()`:
// - host directories at their own paths (NODEFS), and the host's current directory;
// - the host environment (PYTHONPYCACHEPREFIX, SOURCE_DATE_EPOCH, ...) and the interpreter
//   options (-I -E -O -B -P -s -S -u -X -W), both applied by CPython's own start-up code;
// - binary-safe stdin/stdout/stderr on fds 0/1/2; a non-blocking stdin (EAGAIN) is waited on;
// - `-c`, `-m`, a script or `-` run as `__main__` with `sys.argv` and `sys.path[0]` as CPython
//   sets them; SystemExit, an uncaught exception and Emscripten's exit() become the exit status;
// - `sys.executable` is the wrapper, so `os.path.realpath(sys.executable)` names this command.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pyodideDir, ...argv] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href);

// --- the command line, split as CPython's getopt does ----------------------------------------
const WITH_VALUE = new Set(["X", "W", "c", "m", "Q"]);
const options = [];
const warnOptions = []; // -W values, applied after Pyodide's bootstrap (see warningsFromEnv)
let mode = null; // "c", "m", "script" or "stdin"
let target = null;
let i = 0;
for (; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === "--") { i++; break; }
  if (arg === "-" || !arg.startsWith("-")) break;
  if (arg.startsWith("--")) {
    if (arg === "--version" || arg === "-V") { options.push(arg); continue; }
    usage(`unknown option ${arg}`);
  }
  // A cluster of one-letter options, the last of which may take a value.
  let j = 1;
  for (; j < arg.length; j++) {
    const letter = arg[j];
    if (!WITH_VALUE.has(letter)) { options.push("-" + letter); continue; }
    let value = arg.slice(j + 1);
    if (value === "") {
      i++;
      if (i >= argv.length) usage(`Argument expected for the -${letter} option`);
      value = argv[i];
    }
    if (letter === "c" || letter === "m") { mode = letter; target = value; }
    else if (letter === "W") warnOptions.push(value);
    else options.push("-" + letter, value);
    break;
  }
  if (mode) { i++; break; }
}
let rest = argv.slice(i);
if (!mode) {
  if (rest.length && rest[0] !== "-") { mode = "script"; target = rest[0]; rest = rest.slice(1); }
  else { mode = "stdin"; if (rest[0] === "-") rest = rest.slice(1); }
}

function usage(message) {
  process.stderr.write(`${message}\nusage: python [option] ... [-c cmd | -m mod | file | -] [arg] ...\n`);
  process.exit(2);
}

// --- binary-safe standard streams ---------------------------------------------------------------
const sleeper = new Int32Array(new SharedArrayBuffer(4));
function retrying(fn) {
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    try { return fn(); } catch (err) {
      if (err.code !== "EAGAIN") throw err;
      Atomics.wait(sleeper, 0, 0, delay);
    }
  }
}
function writer(fd) {
  return {
    isatty: fs.fstatSync(fd).isCharacterDevice() && process.env.TERM !== undefined,
    write(buffer) {
      let done = 0;
      while (done < buffer.length) done += retrying(() => fs.writeSync(fd, buffer, done, buffer.length - done));
      return buffer.length;
    },
  };
}
function reader(fd) {
  return {
    isatty: false,
    read(buffer) {
      try { return retrying(() => fs.readSync(fd, buffer, 0, buffer.length, null)); }
      catch (err) { if (err.code === "EOF") return 0; throw err; }
    },
  };
}

// --- start CPython -----------------------------------------------------------------------------
const env = { ...process.env };
const executable = env.PYODIDE_PYTHON_EXECUTABLE || process.argv[1];
delete env.PYODIDE_PYTHON_EXECUTABLE;
// Pyodide's own bootstrap trips over warnings turned into errors (PYTHONWARNINGS=error: its
// event loop uses a deprecated asyncio name), so -W and PYTHONWARNINGS are applied once it is
// done, the way warnings.py applies sys.warnoptions when it is imported.
const warningsFromEnv = env.PYTHONWARNINGS;
delete env.PYTHONWARNINGS;
function exitStatus(err) {
  if (err && (err.name === "ExitStatus" || typeof err.status === "number")) return err.status;
  const match = /Program terminated with exit\((\d+)\)/.exec(String(err && err.message));
  if (match) return Number(match[1]);
  process.stderr.write(`python.mjs: ${err && err.stack ? err.stack : err}\n`);
  return 1;
}

function mountHost(FS) {
  // Emscripten keeps its own /dev, /proc, /lib (the stdlib lives in /lib/python3.X); everything
  // else at the top of the host is mounted at its own path.
  const keep = new Set(["dev", "proc", "sys", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "boot"]);
  for (const name of fs.readdirSync("/")) {
    if (keep.has(name)) continue;
    const host = "/" + name;
    let stat;
    try { stat = fs.lstatSync(host); } catch { continue; }
    if (!stat.isDirectory()) continue;
    try { FS.mkdirTree(host); } catch {}
    FS.mount(FS.filesystems.NODEFS, { root: host }, host);
  }
}

// The Python side: runs the program as CPython's pymain_run_python does and returns the status.
const RUNNER = String.raw`
def _pyodide_python_main(mode, target, argv, executable, cwd, warn_env, warn_options):
    import os, sys
    sys.executable = sys._base_executable = executable
    os.chdir(cwd)
    options = []
    if warn_env is not None:
        os.environ["PYTHONWARNINGS"] = warn_env
        if not sys.flags.ignore_environment:
            options = [part.strip() for part in warn_env.split(",") if part.strip()]
    options += list(warn_options)
    if options:
        import warnings
        sys.warnoptions[:] = options
        warnings._processoptions(options)
    status = 0
    try:
        try:
            safe = sys.flags.safe_path or sys.flags.isolated
            # Pyodide puts "" first whatever the options; CPython's own first entry follows.
            if sys.path[:1] == [""]:
                del sys.path[0]
            if mode == "c":
                sys.argv[:] = ["-c", *argv]
                if not safe:
                    sys.path.insert(0, "")
                import __main__
                code = compile(target + "\n", "<string>", "exec")
                exec(code, __main__.__dict__)
            elif mode == "m":
                import runpy
                sys.argv[:] = ["-m", *argv]
                if not safe:
                    sys.path.insert(0, cwd)
                runpy._run_module_as_main(target, alter_argv=True)
            else:
                import runpy
                if mode == "stdin":
                    sys.argv[:] = ["", *argv]
                    if not safe:
                        sys.path.insert(0, "")
                    import __main__
                    exec(compile(sys.stdin.read(), "<stdin>", "exec"), __main__.__dict__)
                else:
                    sys.argv[:] = [target, *argv]
                    if not safe:
                        sys.path.insert(0, os.path.dirname(os.path.realpath(target)))
                    runpy.run_path(target, run_name="__main__")
        except SystemExit as exc:
            status = _pyodide_python_exit(exc)
        except BaseException as exc:
            tb = exc.__traceback__
            sys.excepthook(type(exc), exc, tb.tb_next.tb_next if tb and tb.tb_next else tb)
            status = 1
        try:
            import atexit
            atexit._run_exitfuncs()
        except SystemExit as exc:
            status = _pyodide_python_exit(exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return status

def _pyodide_python_exit(exc):
    import sys
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1

_pyodide_python_main
`;

let exitCode = 0;
try {
  // `-c pass` makes CPython's config parse the options (and see `-c` for sys.path's first entry);
  // the real program runs below, once the host file system is mounted.
  // The host is mounted before CPython starts, so that start-up sees it (PYTHONPATH,
  // sitecustomize, .pth files, the current directory).
  const fsInit = async (FS) => {
    mountHost(FS);
    FS.chdir(process.cwd());
  };
  const py = await loadPyodide({
    args: [...options, "-c", "pass"], env, fsInit, stdout: () => {}, stderr: () => {},
  });
  py.setStdin(reader(0));
  py.setStdout(writer(1));
  py.setStderr(writer(2));
  const main = py.runPython(RUNNER);
  exitCode = main(mode, target, rest, executable, process.cwd(), warningsFromEnv, warnOptions);
} catch (err) {
  exitCode = exitStatus(err);
}
process.exitCode = exitCode;
process.exit(exitCode);
