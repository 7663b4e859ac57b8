"""A minimal blocking beanstalkd-protocol client for the power-cut checks."""

import socket


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Conn:
    """One connection to 127.0.0.1:port: `cmd` sends raw bytes and returns the reply line,
    `body` reads the n-byte body a FOUND/RESERVED line announced. `reply_wait` bounds each
    wait for the server (the connect timeout by default)."""

    def __init__(self, port, connect_timeout=5, reply_wait=None):
        self.s = connect(port, connect_timeout)
        if reply_wait is not None:
            self.s.settimeout(reply_wait)
        self.buf = b""

    def _fill(self, enough):
        while not enough():
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def line(self):
        self._fill(lambda: b"\r\n" in self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def body(self, n):
        self._fill(lambda: len(self.buf) >= n + 2)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def cmd(self, raw):
        self.s.sendall(raw)
        return self.line()

    def close(self):
        self.s.close()
