#!/usr/bin/env python3
"""Power-cut check for a three-node larder cluster, driven by ../shared/tools/powercut.

Each node keeps its data directory on a powercut mount of its own (one POWERCUT_STATE per
mount), so a cut on one node loses only that node's unsynced writes. Each round:

1. start the three nodes (fresh mounts in round 0: node 1 forms the cluster);
2. run producers and a worker (reserve-with-timeout, delete) against all three nodes; every
   client records each confirmation it gets (INSERTED id -> body, deletes sent, DELETED) and,
   when its connection closes, times out or answers NO_QUORUM, counts that command's outcome
   as unknown and moves to the next node;
3. cut the power on one node (the leader in even rounds, a follower in odd ones) and require
   the other two to keep confirming work; then remount and restart it and require progress
   again;
4. cut the power on all three nodes at once, remount, restart, wait for a leader, and check
   through one node (chosen at random; followers forward to the leader) that every confirmed
   put is there with its exact body unless its delete was sent, that no confirmed delete came
   back, and that no id was confirmed twice. A reply is sent only once its change was
   fdatasync'ed on a majority, so no confirmed change may be lost even though every node
   lost its unsynced writes.

Usage: cluster_check.py LARDER POWERCUT_SH [--rounds N] [--segment-size BYTES] [--seed N] [--keep]

There is no --expect-loss (check.py has one, run with --fsync never): cluster mode refuses
any --fsync but always, so there is no setting of larder under which this check should see
confirmed work lost. (Given a wrapper that starts larder with fsync and fdatasync made no-ops
through LD_PRELOAD, it does report confirmed jobs lost.)

Each node's standard error goes to a file; on a failure the script prints those logs.
"""
import argparse, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, traceback

import bsclient

NODES = (1, 2, 3)
REPLY_WAIT = 10  # seconds a client waits for one reply before it gives up on the connection
PATIENCE = 30  # seconds to wait for a start, a leader, or progress
PROGRESS = 10  # confirmations that count as progress


class Failure(Exception):
    pass


class Conn(bsclient.Conn):
    def __init__(self, port):
        super().__init__(port, connect_timeout=2, reply_wait=REPLY_WAIT)


def bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def fixed_ports(rng, n):
    """Ports below the kernel's ephemeral range (32768+), so that no outgoing connection or
    port-0 listener of another program takes one while its node is down. They stay the same
    for the whole run: the members know each other by them."""
    ports = []
    while len(ports) < n:
        p = rng.randrange(20000, 32000)
        if p not in ports and bindable(p):
            ports.append(p)
    return ports


class Node:
    def __init__(self, nid, port, cport, peers, mnt, state, log):
        self.id, self.port, self.cport, self.peers = nid, port, cport, peers
        self.mnt, self.state, self.log = mnt, state, log
        self.proc = None
        self.offset = 0  # where the current launch's output starts in the log

    def start(self, larder, extra, note):
        with open(self.log, "ab") as f:
            f.write(b"=== cluster_check: %s\n" % note.encode())
            self.offset = f.tell()
        args = [larder, "serve", "--listen", "127.0.0.1:%d" % self.port,
                "--data-dir", os.path.join(self.mnt, "data"), "--node-id", str(self.id),
                "--cluster-listen", "127.0.0.1:%d" % self.cport, *extra]
        for pid, cport in self.peers:
            args += ["--peer", "%d=127.0.0.1:%d" % (pid, cport)]
        env = dict(os.environ, LARDER_LOG="info,openraft=warn", LARDER_LOG_FORMAT="text")
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=f, cwd="/", env=env)

    def output(self):
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self):
        deadline = time.monotonic() + PATIENCE
        while "cluster node started" not in self.output():
            if not self.running():
                raise Failure("node %d exited while starting (status %s)" % (self.id, self.proc.returncode))
            if time.monotonic() > deadline:
                raise Failure("node %d did not start within %ds" % (self.id, PATIENCE))
            time.sleep(0.02)

    def leading(self):
        """The term this node serves commands in, by its last word on leadership, or None."""
        if not self.running():
            return None
        last = None
        for line in self.output().splitlines():
            if "leader: serving commands" in line or "lost leadership" in line:
                last = line
        if last is None or "leader: serving commands" not in last:
            return None
        try:
            return int(last.split("term=")[1].split()[0])
        except (IndexError, ValueError):
            raise Failure("node %d: cannot read the term in %r" % (self.id, last))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("larder"); ap.add_argument("powercut")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--segment-size", help="larder's --wal-segment-size (small: entries cross segments)")
    ap.add_argument("--seed", type=int, help="for the timings and the ports (default: random)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' logs even if the check passes")
    a = ap.parse_args()
    a.larder = os.path.abspath(a.larder)
    a.powercut = os.path.abspath(a.powercut)
    if not os.path.isfile(a.powercut):
        print("cluster_check.py: no powercut tool at %s" % a.powercut, file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print("cluster_check: seed %d" % seed)
    extra = ["--wal-segment-size", a.segment_size] if a.segment_size else []

    work = tempfile.mkdtemp(prefix="larder-cluster-powercut-")
    ports = fixed_ports(rng, 6)
    cports = {nid: ports[3 + i] for i, nid in enumerate(NODES)}
    nodes = {}
    for i, nid in enumerate(NODES):
        mnt = os.path.join(work, "mnt%d" % nid)
        state = os.path.join(work, "state%d" % nid)
        os.makedirs(mnt); os.makedirs(state)
        nodes[nid] = Node(nid, ports[i], cports[nid], [(p, cports[p]) for p in NODES if p != nid],
                          mnt, state, os.path.join(work, "node%d.log" % nid))

    def pc(node, *args):
        env = dict(os.environ, POWERCUT_STATE=node.state)
        r = subprocess.run(["bash", a.powercut, args[0], node.mnt, *args[1:]], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure("powercut %s %s failed (%d): %s%s" % (args[0], node.mnt, r.returncode, r.stdout, r.stderr))
        return r.stdout.strip()

    # Everything the clients were told, over all rounds.
    lock = threading.Condition()
    puts, deleting, deleted, twice, reserved = {}, set(), set(), [], []
    confirmed = [0]

    def confirm():  # with lock held
        confirmed[0] += 1
        lock.notify_all()

    def supervise(expected_down=()):
        for n in nodes.values():
            if n.id not in expected_down and n.proc is not None and n.proc.poll() is not None:
                raise Failure("node %d stopped by itself (status %s)" % (n.id, n.proc.returncode))

    def wait_progress(what, down=()):
        with lock:
            goal = confirmed[0] + PROGRESS
        deadline = time.monotonic() + PATIENCE
        with lock:
            while confirmed[0] < goal:
                supervise(down)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("no %d confirmations within %ds %s" % (PROGRESS, PATIENCE, what))
                lock.wait(min(left, 0.2))

    def leader():
        """(node, term) of the node that serves commands in the newest term, once one does."""
        deadline = time.monotonic() + PATIENCE
        while True:
            supervise()
            leading = [(t, n.id) for n in nodes.values() for t in [n.leading()] if t is not None]
            if leading:
                best = max(leading)
                # Only a leader whose term no running node has gone past.
                seen = [int(t) for n in nodes.values() if n.running()
                        for t in re.findall(r"\bterm=(\d+)", n.output())]
                if max(seen) <= best[0]:
                    return best[1], best[0]
            if time.monotonic() > deadline:
                raise Failure("no leader within %ds" % PATIENCE)
            time.sleep(0.05)

    def start_all(note):
        for n in nodes.values():
            n.start(a.larder, extra, note)
        for n in nodes.values():
            n.wait_started()

    ports_order = [nodes[nid].port for nid in NODES]

    def roam(at, stop):
        """A connection to the node `at` points to, or (None, the next node) after a pause."""
        try:
            return Conn(ports_order[at % 3]), at
        except OSError:
            stop.wait(0.05)
            return None, at + 1

    def producer(rnd, p, stop):
        at, i, c = p, 0, None
        while not stop.is_set():
            if c is None:
                c, at = roam(at, stop)
                if c is None:
                    continue
            body = ("r%dp%di%d-" % (rnd, p, i)).encode() + b"x" * (i % 97)
            i += 1
            try:
                r = c.cmd(b"put 1 0 60 %d\r\n%s\r\n" % (len(body), body))
            except OSError:
                r = None
            if r is not None and r.startswith("INSERTED "):
                jid = int(r.split()[1])
                with lock:
                    if jid in puts:
                        twice.append(jid)
                    puts[jid] = body
                    confirm()
            else:
                # Closed, timed out or NO_QUORUM: this put may or may not have happened.
                c.close(); c = None; at += 1
                stop.wait(0.05)

    def worker(stop):
        at, c = 0, None
        while not stop.is_set():
            if c is None:
                c, at = roam(at, stop)
                if c is None:
                    continue
            try:
                r = c.cmd(b"reserve-with-timeout 1\r\n")
                if r == "TIMED_OUT":
                    continue
                if r.startswith("RESERVED "):
                    jid, n = int(r.split()[1]), int(r.split()[2])
                    body = c.body(n)
                    with lock:
                        reserved.append((jid, body))
                        deleting.add(jid)
                    r = c.cmd(b"delete %d\r\n" % jid)
                    if r == "DELETED":
                        with lock:
                            deleted.add(jid)
                            confirm()
                        continue
            except OSError:
                pass
            c.close(); c = None; at += 1
            stop.wait(0.05)

    def check(rnd):
        """Checks every confirmation through one node; again if the leader changed meanwhile."""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            lid, term = leader()
            via = nodes[rng.choice(NODES)]
            with lock:
                items, gone, dels = dict(puts), set(deleted), set(deleting)
                got_twice, handed = list(twice), list(reserved)
            problems, lost = [], []
            try:
                c = Conn(via.port)
                # Deleted ids include any whose put was done but not confirmed.
                for jid in sorted(set(items) | gone):
                    body = items.get(jid)
                    r = c.cmd(b"peek %d\r\n" % jid)
                    if r == "NO_QUORUM":
                        raise ConnectionError("NO_QUORUM")
                    if r.startswith("FOUND "):
                        got = c.body(int(r.split()[2]))
                        if jid in gone:
                            problems.append("deleted job %d came back" % jid)
                        elif got != body:
                            problems.append("job %d body changed: %r, confirmed %r" % (jid, got, body))
                    elif r == "NOT_FOUND":
                        if jid not in dels:
                            lost.append(jid)
                    else:
                        raise Failure("peek %d: unexpected reply %r" % (jid, r))
                c.close()
            except OSError as e:
                print("round %d: check through node %d interrupted (%s); again" % (rnd, via.id, e))
                time.sleep(0.5)  # a follower may not know the new leader yet
                continue
            if leader() != (lid, term):
                print("round %d: leadership changed during the check; again" % rnd)
                continue
            for jid in lost:
                problems.append("confirmed job %d lost" % jid)
            for jid in got_twice:
                problems.append("job id %d confirmed twice" % jid)
            for jid, body in handed:
                if jid in items and items[jid] != body:
                    problems.append("job %d reserved with body %r, confirmed %r" % (jid, body, items[jid]))
            return items, gone, problems, lid, term, via.id
        raise Failure("round %d: no stable leader to check through within %ds" % (rnd, PATIENCE))

    def dump_logs():
        noise = "OneshotConsumer.tx.send"  # openraft, once per entry proposed without a reply wanted
        for n in nodes.values():
            print("----- node %d stderr (%s; lines with %r left out) -----" % (n.id, n.log, noise))
            try:
                with open(n.log, "r", errors="replace") as f:
                    lines = [l for l in f if noise not in l]
            except OSError:
                continue
            if len(lines) > 400:
                print("[... %d earlier lines ...]" % (len(lines) - 400))
                lines = lines[-400:]
            sys.stdout.write("".join(lines))
        sys.stdout.flush()

    status = 1
    threads, stop = [], threading.Event()
    try:
        for n in nodes.values():
            pc(n, "mount", "--fresh")
            os.makedirs(os.path.join(n.mnt, "data"))
        for rnd in range(a.rounds):
            t0 = time.monotonic()
            start_all("round %d: start" % rnd)
            stop = threading.Event()
            threads = [threading.Thread(target=producer, args=(rnd, p, stop)) for p in range(3)]
            threads.append(threading.Thread(target=worker, args=(stop,)))
            for t in threads:
                t.start()
            wait_progress("after starting the cluster")
            time.sleep(rng.uniform(0.3, 1.2))  # cut at a random point of the load

            # One node loses its power; the other two must go on.
            lid, term = leader()
            victim = lid if rnd % 2 == 0 else rng.choice([nid for nid in NODES if nid != lid])
            v = nodes[victim]
            with lock:
                before = confirmed[0]
            one = pc(v, "crash", str(v.proc.pid))
            v.proc.wait()
            wait_progress("with node %d down" % victim, down=(victim,))
            time.sleep(rng.uniform(0.2, 0.8))
            with lock:
                while_down = confirmed[0] - before
            pc(v, "mount")
            v.start(a.larder, extra, "round %d: restart after its power cut" % rnd)
            v.wait_started()
            wait_progress("after node %d restarted" % victim)
            time.sleep(rng.uniform(0.3, 1.0))

            # All three lose their power at once: kill every node, then drop each mount's
            # unsynced writes.
            for n in nodes.values():
                os.kill(n.proc.pid, signal.SIGKILL)
            for n in nodes.values():
                n.proc.wait()
            stop.set()
            for t in threads:
                t.join()
            threads = []
            cuts = [pc(n, "crash") for n in nodes.values()]
            for n in nodes.values():
                pc(n, "mount")
            start_all("round %d: restart after the power cut on all three" % rnd)
            items, gone, problems, lid2, term2, via = check(rnd)
            for p in problems[:30]:
                print("round %d: %s" % (rnd, p))
            if len(problems) > 30:
                print("round %d: ... and %d more problems" % (rnd, len(problems) - 30))
            print("round %d: %d confirmed puts, %d confirmed deletes checked through node %d "
                  "(leader %d, term %d); %d confirmations while node %d (the %s) was cut off, "
                  "%.1fs"
                  % (rnd, len(items), len(gone), via, lid2, term2, while_down, victim,
                     "leader" if victim == lid else "follower", time.monotonic() - t0))
            print("  node %d cut alone: %s" % (victim, one))
            for n, cut in zip(nodes.values(), cuts):
                print("  node %d in the cut of all three: %s" % (n.id, cut))
            if problems:
                raise Failure("round %d: %d problems" % (rnd, len(problems)))
            for n in nodes.values():
                n.proc.terminate()
            for n in nodes.values():
                try:
                    n.proc.wait(timeout=PATIENCE)
                except subprocess.TimeoutExpired:
                    raise Failure("node %d did not stop within %ds of SIGTERM" % (n.id, PATIENCE))
        print("cluster_check: %d rounds passed; %d confirmed puts, %d confirmed deletes, "
              "no confirmed change lost" % (a.rounds, len(puts), len(deleted)))
        status = 0
    except Failure as e:
        print("cluster_check: FAILED: %s" % e)
        dump_logs()
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("cluster_check: FAILED: the script itself failed")
        dump_logs()
    finally:
        stop.set()
        for t in threads:
            t.join()
        for n in nodes.values():
            if n.running():
                n.proc.kill()
                n.proc.wait()
        for n in nodes.values():
            env = dict(os.environ, POWERCUT_STATE=n.state)
            subprocess.run(["bash", a.powercut, "unmount", n.mnt], env=env, capture_output=True)
            subprocess.run(["bash", a.powercut, "wipe", n.mnt], env=env, capture_output=True)
        if status == 0 and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("cluster_check: logs kept in %s" % work)
    return status


if __name__ == "__main__":
    sys.exit(main())
