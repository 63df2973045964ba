#!/usr/bin/env python3
"""A small HTTP server that takes its listening sockets from paddock (or systemd) with the
LISTEN_FDS protocol instead of binding them: descriptors 3, 4, ... are listening sockets,
LISTEN_PID must be this process's pid, LISTEN_FDNAMES names them.

It answers every request with one line: "pid=PID fds=N names=NAMES tag=TAG" (TAG is its first
argument), then closes the connection. On SIGTERM it stops accepting, finishes the connection in
hand and exits 0: the connections still waiting stay in the socket's backlog, which paddock
keeps open, for the next process.
"""
import os
import select
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    sys.exit("serve.py: LISTEN_PID is not this process: no sockets were handed over")
n = int(os.environ.get("LISTEN_FDS", "0"))
if n < 1:
    sys.exit("serve.py: LISTEN_FDS gives no socket")
names = os.environ.get("LISTEN_FDNAMES", "")
tag = sys.argv[1] if len(sys.argv) > 1 else ""
socks = [socket.socket(fileno=3 + i) for i in range(n)]
for s in socks:
    s.setblocking(False)

stop_r, stop_w = os.pipe()
os.set_blocking(stop_w, False)
signal.set_wakeup_fd(stop_w)
signal.signal(signal.SIGTERM, lambda *_: None)
body = f"pid={os.getpid()} fds={n} names={names} tag={tag}\n".encode()
reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
print(f"serving on {n} inherited sockets ({names}) as pid {os.getpid()}", flush=True)

while True:
    ready, _, _ = select.select(socks + [stop_r], [], [])
    if stop_r in ready:
        break
    for s in ready:
        try:
            c, _ = s.accept()
        except BlockingIOError:
            continue
        c.setblocking(True)
        c.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.sendall(reply)
        except OSError:
            pass
        finally:
            c.close()
print("stopping: the sockets stay with paddock", flush=True)
