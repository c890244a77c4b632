"""A shaped link to a second server: a network namespace, a veth pair, `tbf`, a delaying proxy.

The kernel here has `tc` with `tbf` but no `netem`, so the rate and the latency come from
two places:

- rate: a network namespace joined to the root one by a veth pair (root 10.231.N.1/30,
  namespace 10.231.N.2/30), with a `tbf` qdisc on both ends (`NetLab.shape`);
- latency: `DelayProxy`, a TCP proxy in the root namespace (asyncio in a thread of the
  harness) that listens on 127.0.0.1 and forwards to the server inside the namespace,
  holding every chunk `delay` seconds in each direction, in order.

The client talks to the proxy's 127.0.0.1 address (it refuses to send a token over plain
http to any other address): client → proxy (loopback) → veth (shaped) → server.

Making the namespace needs root, `ip` and `tc`; where it cannot be made, `NetLab.open`
says why and the rows read n/a. Names and the subnet N are derived from the bench's work
folder, so benches of other checkouts on the same machine do not meet; a namespace left
from a killed run of this one is removed at start.
"""

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading

from .proc import StepFailed, log

PREFIX = 30
# Each direction holds a chunk this long: ~10 ms round trip.
ONE_WAY_DELAY = 0.005
CHUNK = 256 * 1024
# How many chunks one direction may hold before it stops reading (back-pressure).
QUEUE_CHUNKS = 256


def _ip(*args, check=True):
    """Runs `ip ARGS`; returns the completed process (raises StepFailed if check)."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise StepFailed(f"ip {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def _tc(*args, netns=None, check=True):
    """Runs `tc ARGS`, in the namespace if given."""
    cmd = ["tc", *(["-n", netns] if netns else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p


class NetLab:
    """The namespace and the veth pair; `open()` makes them, `close()` removes them."""

    def __init__(self, work):
        n = int(hashlib.sha256(str(work).encode()).hexdigest(), 16) % 250 + 1
        self.namespace = f"pycache-bench-{n}"
        self.root_dev, self.ns_dev = f"pcb{n}-root", f"pcb{n}-ns"
        self.root_addr, self.ns_addr = f"10.231.{n}.1", f"10.231.{n}.2"
        self.up = False

    @staticmethod
    def missing():
        """Why a namespace cannot be made here (None if it can be tried)."""
        if os.geteuid() != 0:
            return "not root: network namespaces need root"
        for tool in ("ip", "tc"):
            if not shutil.which(tool):
                return f"`{tool}` is not installed"
        return None

    @classmethod
    def open(cls, work):
        """(lab, None) with the link up and unshaped, or (None, reason) where it cannot be."""
        reason = cls.missing()
        if reason:
            return None, reason
        lab = cls(work)
        try:
            lab._remove_leftovers()
            lab._create()
            lab._probe_tbf()
        except (StepFailed, OSError) as e:
            lab.close()
            return None, f"could not make the namespace: {e}"
        return lab, None

    def _remove_leftovers(self):
        """A namespace or veth pair left by a killed run: end its processes, remove both."""
        if self.namespace in _ip("netns", "list", check=False).stdout.split():
            log(f"netlab: removing the namespace {self.namespace} left by an earlier run")
            for pid in _ip("netns", "pids", self.namespace, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            _ip("netns", "del", self.namespace, check=False)
        _ip("link", "del", self.root_dev, check=False)

    def _create(self):
        self.up = True
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.root_dev, "type", "veth", "peer", "name", self.ns_dev)
        _ip("link", "set", self.ns_dev, "netns", self.namespace)
        _ip("addr", "add", f"{self.root_addr}/{PREFIX}", "dev", self.root_dev)
        _ip("link", "set", self.root_dev, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.ns_addr}/{PREFIX}", "dev", self.ns_dev)
        _ip("-n", self.namespace, "link", "set", self.ns_dev, "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")

    def _probe_tbf(self):
        """Fails now (not in the middle of a run) if `tbf` is missing."""
        self.shape(100e6)
        self.unshape()

    def exec_prefix(self):
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def shape(self, rate_bits):
        """`tbf` at `rate_bits` per second on both ends of the pair.

        The bucket holds ~4 ms at the rate (at least 64 KiB, so one GSO packet fits);
        packets wait at most 25 ms in the queue before they are dropped.
        """
        burst = max(64 * 1024, int(rate_bits / 8 * 0.004))
        spec = ["root", "tbf", "rate", f"{int(rate_bits)}bit", "burst", str(burst),
                "latency", "25ms"]
        _tc("qdisc", "replace", "dev", self.root_dev, *spec)
        _tc("qdisc", "replace", "dev", self.ns_dev, *spec, netns=self.namespace)

    def unshape(self):
        """Removes the `tbf` qdiscs (no error if there are none)."""
        _tc("qdisc", "del", "dev", self.root_dev, "root", check=False)
        _tc("qdisc", "del", "dev", self.ns_dev, "root", netns=self.namespace, check=False)

    def close(self):
        """Removes the namespace and the pair (processes inside must be stopped first)."""
        if self.up:
            _ip("netns", "del", self.namespace, check=False)
            _ip("link", "del", self.root_dev, check=False)
            self.up = False


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk `delay` seconds each way, in order.

    It runs an asyncio loop in a daemon thread of the harness. Each direction of a
    connection is a reader that stamps chunks with a due time and a writer that sends
    them when due, so chunks in flight overlap (the delay adds latency, not a rate cap).
    """

    def __init__(self, host, port, delay=ONE_WAY_DELAY):
        self.target, self.delay = (host, port), delay
        self.port = None
        self._loop = self._server = self._thread = None
        self._ready = threading.Event()

    def start(self):
        """Starts listening; returns self once the port is known."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delay-proxy")
        self._thread.start()
        self._ready.wait(10)
        if not self.port:
            raise StepFailed("the delaying proxy did not start")
        return self

    @property
    def address(self):
        """host:port the client connects to."""
        return f"127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", 0, limit=4 * CHUNK))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def stop(self):
        """Stops listening, drops open connections, ends the thread."""
        if self._loop and self._thread.is_alive():
            def shut():
                self._server.close()
                self._loop.stop()
            self._loop.call_soon_threadsafe(shut)
            self._thread.join(10)

    @staticmethod
    def _tune(writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=4 * CHUNK)

    async def _handle(self, client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target, limit=4 * CHUNK)
        except OSError:
            client_writer.close()
            return
        for w in (client_writer, up_writer):
            self._tune(w)
        try:
            await asyncio.gather(self._pipe(client_reader, up_writer),
                                 self._pipe(up_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a reset, or the proxy stopping: the connection ends either way
        finally:
            for w in (client_writer, up_writer):
                w.close()

    async def _pipe(self, reader, writer):
        """Copies reader → writer, each chunk sent `delay` after it was read; EOF passed on."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue(QUEUE_CHUNKS)

        async def read_side():
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                await queue.put((loop.time() + self.delay, data))
                if not data:
                    return

        reading = asyncio.create_task(read_side())
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()


# Run inside the namespace: listen on the address given, print the port, send N bytes to one peer.
_SENDER = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
block = b"\0" * (1 << 20)
left = int(sys.argv[2])
while left > 0:
    left -= c.send(block[:min(left, len(block))])
c.close()
"""
# Run in the root namespace: connect, read to EOF, print the bytes and the seconds.
_RECEIVER = r"""
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0, n = time.perf_counter(), 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
print(n, time.perf_counter() - t0)
"""


def proxy_throughput(lab, nbytes):
    """Bytes and seconds to pull `nbytes` from the namespace through a `DelayProxy`, unshaped.

    A sender inside the namespace and a reader in the root one (both separate processes),
    the proxy in this one: what the proxy can carry when the link does not limit it.
    """
    lab.unshape()
    sender = subprocess.Popen([*lab.exec_prefix(), sys.executable, "-c", _SENDER, lab.ns_addr,
                               str(nbytes)], stdout=subprocess.PIPE, text=True)
    proxy = None
    try:
        port = int(sender.stdout.readline())
        proxy = DelayProxy(lab.ns_addr, port).start()
        out = subprocess.run([sys.executable, "-c", _RECEIVER, str(proxy.port)],
                             capture_output=True, text=True, timeout=300)
        got, seconds = out.stdout.split()
        if int(got) != nbytes:
            raise StepFailed(f"proxy check: sent {nbytes} bytes, received {got}")
        return int(got), float(seconds)
    except (ValueError, subprocess.TimeoutExpired) as e:
        raise StepFailed(f"proxy check failed: {e}") from e
    finally:
        if proxy:
            proxy.stop()
        if sender.poll() is None:
            sender.kill()
        sender.wait()
