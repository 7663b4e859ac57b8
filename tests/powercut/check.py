#!/usr/bin/env python3
"""Power-cut check for larder, driven by ../shared/tools/powercut.

Each round: start larder with its data directory on a powercut mount, run producers and a
worker that record every confirmation they get, cut the power mid-load (every write not yet
fsync'ed is lost), remount, restart larder, and check that every confirmed put is there with
its exact body unless its delete was sent, and that no confirmed delete came back.

Usage: check.py LARDER POWERCUT_SH [--rounds N] [--fsync POLICY] [--segment-size BYTES]
                [--producers N] [--workers N] [--expect-loss]
With --expect-loss the script exits 0 only if some confirmed job WAS lost (used to show that
the check can fail, e.g. with --fsync never).
"""
import argparse, os, random, socket, subprocess, sys, tempfile, threading, time

from bsclient import Conn, connect

def wait_listening(port, proc):
    for _ in range(1000):
        if proc.poll() is not None:
            raise RuntimeError("larder exited with %s" % proc.returncode)
        try:
            connect(port).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("larder never listened")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("larder"); ap.add_argument("powercut")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fsync", default="always")
    ap.add_argument("--segment-size", help="larder's --wal-segment-size (small: rotations under load)")
    ap.add_argument("--expect-loss", action="store_true")
    ap.add_argument("--producers", type=int, default=3, help="connections putting jobs")
    ap.add_argument("--workers", type=int, default=1,
                    help="connections reserving and deleting (0 with 1 producer: one client, whose "
                         "records the server's runtime writes and syncs itself)")
    a = ap.parse_args()
    a.larder = os.path.abspath(a.larder)
    a.powercut = os.path.abspath(a.powercut)
    mnt = tempfile.mkdtemp(prefix="larder-powercut-")
    state = tempfile.mkdtemp(prefix="larder-powercut-state-")
    env = dict(os.environ, POWERCUT_STATE=state)
    if not os.path.isfile(a.powercut):
        print("check.py: no powercut tool at %s" % a.powercut, file=sys.stderr)
        return 2

    def pc(*args):
        r = subprocess.run(["bash", a.powercut, *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("powercut %s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))
        return r
    puts, deleting, deleted = {}, set(), set()
    lock = threading.Lock()
    lost = 0
    rng = random.Random(7)
    pc("mount", mnt, "--fresh")
    os.makedirs(os.path.join(mnt, "data"))
    try:
        for rnd in range(a.rounds):
            port = free_port()
            extra = ["--wal-segment-size", a.segment_size] if a.segment_size else []
            srv = subprocess.Popen([a.larder, "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir",
                                    os.path.join(mnt, "data"), "--fsync", a.fsync, *extra],
                                   stderr=subprocess.DEVNULL, cwd="/")
            wait_listening(port, srv)
            stop = threading.Event()
            def producer(p):
                try:
                    c = Conn(port)
                    i = 0
                    while not stop.is_set():
                        body = ("r%dp%di%d" % (rnd, p, i)).encode(); i += 1
                        r = c.cmd(b"put 1 0 60 %d\r\n%s\r\n" % (len(body), body))
                        if not r.startswith("INSERTED "):
                            return
                        with lock:
                            puts[int(r.split()[1])] = body
                except OSError:
                    return
            def worker():
                try:
                    c = Conn(port)
                    while not stop.is_set():
                        r = c.cmd(b"reserve-with-timeout 1\r\n")
                        if not r.startswith("RESERVED "):
                            continue
                        jid, n = int(r.split()[1]), int(r.split()[2])
                        c.body(n)
                        with lock:
                            deleting.add(jid)
                        if c.cmd(b"delete %d\r\n" % jid) == "DELETED":
                            with lock:
                                deleted.add(jid)
                except OSError:
                    return
            threads = ([threading.Thread(target=producer, args=(p,)) for p in range(a.producers)]
                       + [threading.Thread(target=worker) for _ in range(a.workers)])
            for t in threads: t.start()
            time.sleep(rng.uniform(0.3, 1.2))
            out = pc("crash", mnt, str(srv.pid)).stdout.strip()
            stop.set()
            for t in threads: t.join()
            srv.wait()
            pc("mount", mnt)
            port = free_port()
            extra = ["--wal-segment-size", a.segment_size] if a.segment_size else []
            srv = subprocess.Popen([a.larder, "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir",
                                    os.path.join(mnt, "data"), "--fsync", a.fsync, *extra],
                                   stderr=subprocess.DEVNULL, cwd="/")
            wait_listening(port, srv)
            c = Conn(port)
            with lock:
                items, gone, dels = dict(puts), set(deleted), set(deleting)
            bad = 0
            for jid, body in items.items():
                r = c.cmd(b"peek %d\r\n" % jid)
                if jid in gone:
                    if r != "NOT_FOUND":
                        print("round %d: deleted job %d came back" % (rnd, jid)); bad += 1
                        c.body(int(r.split()[2]))
                elif r == "NOT_FOUND":
                    if jid not in dels:
                        lost += 1
                        if not a.expect_loss:
                            print("round %d: confirmed job %d lost" % (rnd, jid))
                else:
                    got = c.body(int(r.split()[2]))
                    if got != body:
                        print("round %d: job %d body changed" % (rnd, jid)); bad += 1
            print("round %d: %d confirmed puts, %d confirmed deletes checked; %s" % (rnd, len(items), len(gone), out))
            c.s.close()
            srv.terminate(); srv.wait()
            if bad and not a.expect_loss:
                return 1
        if a.expect_loss:
            print("confirmed jobs lost: %d (expected some)" % lost)
            return 0 if lost > 0 else 1
        print("confirmed jobs lost: %d" % lost)
        return 0 if lost == 0 else 1
    finally:
        subprocess.run(["bash", a.powercut, "unmount", mnt], env=env, capture_output=True)
        subprocess.run(["bash", a.powercut, "wipe", mnt], env=env, capture_output=True)

if __name__ == "__main__":
    sys.exit(main())
