"""`hyperllama run MODEL` with no prompt, on a real terminal (a pty): history across turns,
multi-line input, Ctrl-C stopping an answer but not the session, /bye."""

import fcntl
import os
import pty
import select
import subprocess
import termios
import time

from conftest import BINARY


class Term:
    def __init__(self, args, env):
        self.master, slave = pty.openpty()
        def make_controlling_tty():
            # A session of its own with the pty as its terminal, so ^C becomes SIGINT.
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                     preexec_fn=make_controlling_tty)
        os.close(slave)
        self.buf = b""

    def read_until(self, needle: bytes, timeout=120.0):
        deadline = time.time() + timeout
        while needle not in self.buf:
            left = deadline - time.time()
            assert left > 0, f"timed out waiting for {needle!r}; screen: {self.buf[-2000:]!r}"
            r, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    # The terminal closed: the program exited.
                    raise AssertionError(f"the program exited (status {self.proc.wait()}) before {needle!r}; "
                                         f"screen: {self.buf[-2000:]!r}")
        idx = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def send(self, data: bytes):
        os.write(self.master, data)


def test_interactive_chat(server, oc):
    oc.create(model="smol-chat", from_="smol", parameters={"temperature": 0, "num_predict": 2000})
    env = dict(os.environ, HYPERLLAMA_HOST=server)
    t = Term([str(BINARY), "run", "smol-chat"], env)
    try:
        chat(t)
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()
    oc.delete("smol-chat")


def chat(t):
    t.read_until(b">>> Chatting")
    t.read_until(b">>> ")
    t.send(b"My name is Ada. What is the capital of France?\r")
    first = t.read_until(b">>> ")
    assert b"Paris" in first, first
    # Multi-line input between triple quotes.
    t.send(b'"""\rSay the word\rhello.\r"""\r')
    t.read_until(b">>> ")
    # Ctrl-C stops a long answer but not the session.
    t.send(b"Write a very long story about a dragon.\r")
    time.sleep(1.5)
    t.send(b"\x03")
    t.read_until(b"(stopped)")
    t.read_until(b">>> ")
    t.send(b"/bye\r")
    assert t.proc.wait(timeout=30) == 0


def test_a_refused_turn_keeps_the_session(server, oc):
    oc.create(model="smol-tiny", from_="smol", parameters={"num_ctx": 64, "truncate": False, "num_predict": 4})
    env = dict(os.environ, HYPERLLAMA_HOST=server)
    t = Term([str(BINARY), "run", "smol-tiny"], env)
    try:
        t.read_until(b">>> Chatting")
        t.read_until(b">>> ")
        t.send(b"word " * 200 + b"\r")
        refused = t.read_until(b">>> ")
        assert b"Error:" in refused and b"context" in refused, refused
        # The refused input was forgotten: a short one fits now.
        t.send(b"Hi\r")
        answer = t.read_until(b">>> ")
        assert b"Error" not in answer, answer
        t.send(b"/bye\r")
        assert t.proc.wait(timeout=30) == 0
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()
    oc.delete("smol-tiny")
