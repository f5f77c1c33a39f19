"""The script the sandboxed child runs: read a JSON request, call the function, print JSON.

It installs an audit hook that refuses file changes outside its working directory, reads of
other files, sockets and new processes. Under the OS sandbox that hook is only a second layer
that turns a blocked action into a clear message the optimizer can learn from; the boundary is
the namespaces. In weak mode it is the only guard, and code in the child can patch it.
"""

RUNNER = r'''
import json, sys, os, traceback, builtins
data = json.loads(sys.stdin.read())
root = os.path.realpath(os.getcwd())
me = str(os.getpid())
FILENAME = "<trainable:" + data["name"] + ">"
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# events that change the file system -> which arguments are paths that must stay inside root
_CHANGES = {"os.remove": (0,), "os.rmdir": (0,), "shutil.rmtree": (0,), "os.mkdir": (0,),
            "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,),
            "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,), "os.chflags": (0,),
            "os.setxattr": (0,), "os.removexattr": (0,)}
_DENIED = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork",
           "os.forkpty", "os.spawn", "os.kill", "os.killpg", "os.startfile", "ctypes.dlopen",
           "ctypes.dlsym", "ctypes.call_function", "signal.pthread_kill"}
# modules whose only use here is to escape: spawning without an audit event, raw memory
_NO_IMPORT = {"_posixsubprocess", "_ctypes", "ctypes", "_multiprocessing", "multiprocessing"}
def _inside(p):
    if isinstance(p, int):
        return False  # a change through a file descriptor: cannot be checked, refuse it
    try:
        p = os.fsdecode(os.fspath(p))
    except TypeError:
        return False
    rp = os.path.realpath(p)
    return rp == root or rp.startswith(root + os.sep)
# what may be read besides the sandbox directory: the interpreter's own library (imports,
# tracebacks), a few devices, time zones, this process's /proc. Not the user's files: a
# project's .env or ~/.netrc holds API keys just like the parent's environment does.
_READABLE = tuple(sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix,
                   sys.exec_prefix, sys.base_exec_prefix)} | {"/usr/share/zoneinfo",
                   "/dev/null", "/dev/urandom", "/dev/zero", "/proc/" + me}))
def _readable(p):
    try:
        rp = os.path.realpath(os.fsdecode(os.fspath(p)))
    except TypeError:
        return False
    return rp == root or rp.startswith(root + os.sep) or any(
        rp == r or rp.startswith(r + os.sep) for r in _READABLE)
def _hook(event, args):
    if event == "open":
        path = args[0]
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        if isinstance(path, int):
            return
        write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE))
        if write and not _inside(path):
            raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
        if not write and not _readable(path):
            raise PermissionError("sandbox: reading files outside the sandbox directory is not allowed")
    elif event in _CHANGES:
        for i in _CHANGES[event]:
            if i < len(args) and not _inside(args[i]):
                raise PermissionError("sandbox: " + event + " outside the sandbox directory is not allowed")
    elif event in _DENIED or event.startswith("socket."):
        raise PermissionError("sandbox: " + event + " is not allowed")
    elif event == "import" and args and str(args[0]).split(".")[0] in _NO_IMPORT:
        raise PermissionError("sandbox: importing " + str(args[0]) + " is not allowed")
# the result goes to a private copy of fd 1; fd 1 itself now points at stderr, so nothing the
# code prints (or any process it manages to start) can forge or corrupt the JSON answer
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
try:
    ns = {"__name__": "__sandbox__"}
    code = compile(data["source"], FILENAME, "exec")
    sys.addaudithook(_hook)
    exec(code, ns)
    fn = ns[data["name"]]
    value = fn(*data["args"], **data["kwargs"])
    try:
        payload = json.dumps({"ok": True, "value": value})
    except (TypeError, ValueError):
        payload = json.dumps({"ok": False, "error": "TypeError: return value is not JSON-serialisable: " + repr(value)[:200], "line": None, "code": ""})
except BaseException as e:
    line, text = None, ""
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename == FILENAME:
            line = fr.lineno
    if line is None and isinstance(e, SyntaxError):
        line = e.lineno
    if line:
        lines = data["source"].splitlines()
        text = lines[line - 1] if 0 < line <= len(lines) else ""
    payload = json.dumps({"ok": False, "error": type(e).__name__ + ": " + str(e)[:500], "line": line, "code": text})
out.write(payload)
out.flush()
'''
