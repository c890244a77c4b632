"""pycache verify: which pairs of marshalled bodies hold equal code objects.

stdin: pairs of bodies, each prefixed with its length (4 bytes, little-endian); stdout: one
line per pair, 1 when both load as code objects that compare equal, else 0.
"""
import marshal
import sys

CODE = type(compile("", "", "exec"))


def names(code, out):
    # `==` on code objects ignores co_filename (and, on some versions, names of nested code).
    out.append((code.co_filename, code.co_name, code.co_firstlineno))
    for const in code.co_consts:
        if isinstance(const, CODE):
            names(const, out)
    return out


def equal(a, b):
    try:
        ca, cb = marshal.loads(a), marshal.loads(b)
    except Exception:
        return False
    if not isinstance(ca, CODE) or not isinstance(cb, CODE):
        return False
    return ca == cb and names(ca, []) == names(cb, [])


def main():
    data = sys.stdin.buffer.read()
    at = 0
    bodies = []
    while at + 4 <= len(data):
        n = int.from_bytes(data[at:at + 4], "little")
        bodies.append(data[at + 4:at + 4 + n])
        at += 4 + n
    verdicts = ["1" if equal(a, b) else "0" for a, b in zip(bodies[::2], bodies[1::2])]
    sys.stdout.write("".join(v + "\n" for v in verdicts))


main()
