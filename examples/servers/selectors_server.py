#!/usr/bin/env python3
"""The event loop a networking course asks students to write, in Python's `selectors`.

One thread, one `selectors.DefaultSelector` (epoll on Linux), non-blocking sockets. It speaks
two of iomodels' protocols, byte for byte as the built-in servers do (docs/ARCHITECTURE.md,
"The protocol contract"; servers/src/protocol/), so loadgen verifies every reply:

  echo      every byte read is written back, in order.
  transfer  `PUT <n>\\n` then n bytes, answered `OK <n> <crc32c, 8 hex digits>\\n`;
            `GET <n>\\n`, answered with n bytes where byte i is (i * 31 + 7) % 251;
            anything else `ERR <reason>\\n` and a close. n is at most 2^40.

What makes it correct rather than a toy: partial writes are kept and sent when the socket is
writable (write interest only while output is pending); while a connection's pending output is
above 64 KiB it is not read from, so a client that sends without reading cannot make the
server hold more than that (backpressure); input held back by that limit is served once
output drains, before reading again; a download is produced as output drains, never whole.

    python3 selectors_server.py --protocol echo --port 7000

prints `listening 127.0.0.1:7000` once ready, and exits 0 on SIGTERM or SIGINT.
"""

import argparse
import errno
import selectors
import signal
import socket
import sys

HIGH_WATER = 64 * 1024  # pending output above which a connection is not read
READ_SIZE = 64 * 1024
MAX_LINE = 64
MAX_SIZE = 1 << 40

PERIOD = 251
WINDOW = 16 * 1024
# The download pattern from phase 0, long enough that a window from any phase is one slice.
PATTERN = bytes((i * 31 + 7) % PERIOD for i in range(PERIOD + WINDOW))


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c_append(crc, data):
    """CRC-32C (Castagnoli), as the `crc32c` crate computes it: zlib's crc32 is another
    polynomial."""
    table = CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Echo:
    def advance(self, data, out, limit):
        """Consumes a prefix of `data`, appending replies to `out` while it is below
        `limit`; returns (bytes consumed, close after sending `out`)."""
        n = min(len(data), max(0, limit - len(out)))
        out += data[:n]
        return n, False

    def streaming(self):
        return False


class Transfer:
    def __init__(self):
        self.state = "line"
        self.size = self.remaining = self.crc = self.sent = 0

    def streaming(self):
        return self.state == "sending"

    def advance(self, data, out, limit):
        consumed = 0
        while len(out) < limit:
            if self.state == "line":
                end = data.find(b"\n", consumed)
                # Too long whether or not its newline has come, so the answer does not depend
                # on how the bytes were split.
                if (len(data) if end < 0 else end) - consumed > MAX_LINE:
                    out += b"ERR line too long\n"
                    return len(data), True
                if end < 0:
                    break
                line = bytes(data[consumed:end])
                consumed = end + 1
                verb, size, error = parse_line(line)
                if error:
                    out += b"ERR " + error + b"\n"
                    return len(data), True
                if verb == b"PUT" and size == 0:
                    out += b"OK 0 00000000\n"
                elif verb == b"PUT":
                    self.state, self.size, self.remaining, self.crc = "receiving", size, size, 0
                else:
                    self.state, self.size, self.sent = "sending", size, 0
            elif self.state == "receiving":
                if consumed == len(data):
                    break
                n = min(self.remaining, len(data) - consumed)
                self.crc = crc32c_append(self.crc, memoryview(data)[consumed:consumed + n])
                self.remaining -= n
                consumed += n
                if self.remaining == 0:
                    out += b"OK %d %08x\n" % (self.size, self.crc)
                    self.state = "line"
            else:
                n = min(self.size - self.sent, limit - len(out), WINDOW)
                phase = self.sent % PERIOD
                out += PATTERN[phase:phase + n]
                self.sent += n
                if self.sent == self.size:
                    self.state = "line"
        return consumed, False


def parse_line(line):
    """(verb, size, None) or (None, None, reason)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    verb, _, size = line.partition(b" ")
    if verb not in (b"PUT", b"GET") or not _:
        return None, None, b"unknown request: expected PUT <n> or GET <n>"
    if not size or len(size) > 14 or not size.isdigit():
        return None, None, b"bad size: expected a decimal number"
    n = int(size)
    if n > MAX_SIZE:
        return None, None, b"size exceeds 2^40"
    return verb, n, None


class Connection:
    def __init__(self, sock, protocol):
        self.sock = sock
        self.session = Echo() if protocol == "echo" else Transfer()
        self.input = bytearray()
        self.output = bytearray()
        self.closing = False  # send what is pending, then close
        self.events = selectors.EVENT_READ


class Server:
    def __init__(self, listener, protocol):
        self.listener = listener
        self.protocol = protocol
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)

    def run(self):
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    self.accept()
                else:
                    self.serve(key.data)

    def accept(self):
        # Accept all that wait: one readiness event may stand for many connections.
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                # Out of descriptors: the rest wait in the backlog until some are freed.
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                if e.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self.protocol)
            self.selector.register(sock, conn.events, conn)

    def serve(self, conn):
        if self.wants_input(conn):
            try:
                data = conn.sock.recv(READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError:
                return self.close(conn)
            if data == b"":
                # The client is done sending: finish what is owed, then close.
                conn.closing = True
            elif data:
                conn.input += data
        self.pump(conn)

    def pump(self, conn):
        """Advances the session and sends, until it waits for the client or the socket."""
        while True:
            before = len(conn.output)
            consumed, close = conn.session.advance(conn.input, conn.output, HIGH_WATER)
            del conn.input[:consumed]
            if close:
                conn.closing = True
            if not self.flush(conn):
                return
            # Nothing consumed or produced, or output still above the mark: wait.
            if (consumed == 0 and len(conn.output) == before) or close:
                break
            if len(conn.output) >= HIGH_WATER:
                break
        if conn.closing and not conn.output:
            return self.close(conn)
        events = selectors.EVENT_READ if self.wants_input(conn) else 0
        if conn.output:
            events |= selectors.EVENT_WRITE
        if events != conn.events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    @staticmethod
    def wants_input(conn):
        """Backpressure: a connection is read only while its output is below the mark and
        what it holds of input is less than one read, so it holds at most two reads of input
        and one mark of output, whatever the client sends."""
        return not conn.closing and len(conn.output) < HIGH_WATER and len(conn.input) < READ_SIZE

    def flush(self, conn):
        """Sends pending output until the socket would block; False when the connection
        is gone."""
        while conn.output:
            try:
                n = conn.sock.send(conn.output)
            except BlockingIOError:
                return True
            except OSError:
                self.close(conn)
                return False
            del conn.output[:n]
        return True

    def close(self, conn):
        self.selector.unregister(conn.sock)
        conn.sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=["echo", "transfer"], default="echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # SIGPIPE is ignored by Python already: a write to a closed socket is an error, not death.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    listener.setblocking(False)
    host, port = listener.getsockname()
    print(f"listening {host}:{port}", flush=True)
    try:
        Server(listener, args.protocol).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
