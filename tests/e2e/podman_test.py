#!/usr/bin/env python3
"""microvm-runtime end to end: podman runs containers as microVMs with it, and
the runtime's own create/start/state/kill/delete follow the runtime-spec.

Everything lives under one temp dir: a busybox image pushed with skopeo to a
docker-registry on 127.0.0.1, podman's storage (vfs), run and tmp dirs, and
the runtime's --root (through a wrapper script, since podman does not pass
--runtime-flag to the cleanup process it starts when a container exits).
Few VMs boot: each test case is one container.

  podman_test.py BIN_DIR SOURCE_DIR
Exits 77 (CTest: skipped) when podman, conmon, skopeo or docker-registry is
missing; scripts/deps.sh installs them.
"""
import ctypes
import json
import select
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN_DIR = SOURCE_DIR = ""
WORK = REGISTRY = None
IMAGE = ""
RUNTIME = WRAPPER = RUNTIME_ROOT = ""
PODMAN = []
TIMEOUT = 180


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", TIMEOUT), **kw)


def podman(*args, **kw):
    return sh(PODMAN + list(args), **kw)


def setUpModule():
    global WORK, REGISTRY, IMAGE, RUNTIME, WRAPPER, RUNTIME_ROOT, PODMAN
    WORK = tempfile.mkdtemp(prefix="microvm-podman-")
    rootfs = os.path.join(WORK, "rootfs")
    layout = os.path.join(WORK, "layout")
    subprocess.run([os.path.join(SOURCE_DIR, "scripts/make-rootfs.sh"), rootfs], check=True, timeout=120)
    subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "tests/e2e/oci_images.py"), layout, rootfs],
                   check=True, timeout=120)
    port = free_port()
    with open(os.path.join(WORK, "registry.yml"), "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (os.path.join(WORK, "registry"), port))
    REGISTRY = subprocess.Popen(["docker-registry", "serve", os.path.join(WORK, "registry.yml")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_port(port), "docker-registry did not listen"
    IMAGE = "127.0.0.1:%d/test/busybox:latest" % port
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "oci:%s:busybox-plain" % layout,
                    "docker://" + IMAGE], check=True, timeout=120)
    RUNTIME = os.path.abspath(os.path.join(BIN_DIR, "microvm-runtime"))
    RUNTIME_ROOT = os.path.join(WORK, "rt")
    WRAPPER = os.path.join(WORK, "microvm-runtime")
    with open(WRAPPER, "w") as f:
        f.write('#!/bin/sh\nexec %s --root %s --log %s "$@"\n' % (RUNTIME, RUNTIME_ROOT, os.path.join(WORK, "rt.log")))
    os.chmod(WRAPPER, 0o755)
    p = os.path.join(WORK, "podman")
    PODMAN = ["podman", "--root", p + "/root", "--runroot", p + "/run", "--tmpdir", p + "/tmp",
              "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
              "--runtime", WRAPPER]
    pulled = podman("pull", "-q", "--tls-verify=false", IMAGE)
    assert pulled.returncode == 0, pulled.stderr


def tearDownModule():
    if WORK is None:
        return
    if PODMAN:
        podman("rm", "-a", "-f", "-t", "0")
    if REGISTRY is not None:
        REGISTRY.terminate()
        REGISTRY.wait(timeout=30)
    leftovers = os.listdir(RUNTIME_ROOT) if RUNTIME_ROOT and os.path.isdir(RUNTIME_ROOT) else []
    shutil.rmtree(WORK, ignore_errors=True)
    assert all(name == ".vm" for name in leftovers), "runtime records left behind: %s" % leftovers


def runtime(*args, **kw):
    return sh([RUNTIME, "--root", RUNTIME_ROOT] + list(args), **kw)


def read(path):
    with open(path) as f:
        return f.read()


def create(*args, out_path=None):
    """`create`: the container keeps the stdio it is given, so it gets files."""
    with open(out_path or os.path.join(WORK, "create.out"), "w+") as out, open(os.path.join(WORK, "create.err"), "w+") as err:
        code = subprocess.run([RUNTIME, "--root", RUNTIME_ROOT, "create"] + list(args), stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, timeout=TIMEOUT).returncode
        err.seek(0)
        return subprocess.CompletedProcess(args, code, "", err.read())


def records():
    return sorted(n for n in os.listdir(RUNTIME_ROOT) if n != ".vm") if os.path.isdir(RUNTIME_ROOT) else []


TMUX_SERVERS = 0


def tmux_server():
    """A tmux command line for a server of its own, and its socket's path.

    One server per use: a new session on the socket of a server that is still
    shutting down can land in it and vanish with it."""
    global TMUX_SERVERS
    TMUX_SERVERS += 1
    socket_path = os.path.join(WORK, "tmux-%d" % TMUX_SERVERS)
    return ["tmux", "-S", socket_path, "-f", "/dev/null"], socket_path


def end_tmux(tmux, socket_path):
    sh(tmux + ["kill-server"])
    if os.path.exists(socket_path):
        os.unlink(socket_path)


def in_tmux(command, keys, expect, timeout=120):
    """Runs command in a tmux terminal, types keys once it runs, returns the screen once expect shows."""
    tmux, socket_path = tmux_server()
    sh(tmux + ["new-session", "-d", "-x", "120", "-y", "30", command + "; sleep 60"])
    try:
        screen = ""
        deadline = time.time() + timeout
        typed_at = 0.0
        while time.time() < deadline and expect not in screen:
            if time.time() - typed_at > 20:  # retype if the terminal was not ready yet
                sh(tmux + ["send-keys", keys, "Enter"])
                typed_at = time.time()
            time.sleep(1)
            screen = sh(tmux + ["capture-pane", "-p"]).stdout
        if expect not in screen:
            screen += "\n--- rt.log ---\n" + "".join(open(os.path.join(WORK, "rt.log")).readlines()[-10:])
        return screen
    finally:
        end_tmux(tmux, socket_path)


class Podman(unittest.TestCase):
    def test_run_prints_and_returns_the_exit_code(self):
        hi = podman("run", "--rm", "--network", "none", IMAGE, "echo", "hi")
        self.assertEqual(hi.returncode, 0, hi.stderr)
        self.assertEqual(hi.stdout, "hi\n")
        code = podman("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual(code.returncode, 3, code.stderr)
        self.assertEqual(code.stdout, "out\n")
        self.assertIn("err", code.stderr)
        self.assertEqual(records(), [])  # --rm deleted the container and its VM

    def test_detached_exec_logs_stop_rm(self):
        name = "mvm-detached"
        run = podman("run", "-d", "--name", name, "--network", "none", IMAGE, "sh", "-c",
                     "echo started; trap 'echo got-term; exit 0' TERM; while true; do echo tick; sleep 1; done")
        self.assertEqual(run.returncode, 0, run.stderr)
        try:
            ps = podman("ps", "--format", "{{.Names}} {{.Status}}")
            self.assertIn(name + " Up", ps.stdout)
            ex = podman("exec", name, "sh", "-c", "echo in-vm $(hostname); exit 4")
            self.assertEqual(ex.returncode, 4, ex.stderr)
            self.assertTrue(ex.stdout.startswith("in-vm "), ex.stdout)
            logs = podman("logs", name)
            self.assertEqual(logs.returncode, 0, logs.stderr)
            self.assertIn("started", logs.stdout)
            # attach streams the running workload's output (a tick a second).
            attach = subprocess.Popen(PODMAN + ["attach", "--no-stdin", name], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
            try:
                seen = b""
                deadline = time.time() + 60
                while time.time() < deadline and b"tick" not in seen:
                    ready, _, _ = select.select([attach.stdout], [], [], 1)
                    if ready:
                        chunk = os.read(attach.stdout.fileno(), 4096)
                        if not chunk:
                            break
                        seen += chunk
                self.assertIn(b"tick", seen)
            finally:
                attach.kill()
                attach.wait(timeout=30)
            # exec -it gets a real terminal in the guest. Repeated: podman sizes
            # the console at a random moment, and the SIGWINCH that follows
            # once stalled one session in about twenty.
            for _ in range(5):
                screen = in_tmux(" ".join(PODMAN + ["exec", "-it", name, "sh"]), "tty; echo $((6*7)) answered",
                                 "42 answered")
                self.assertIn("/dev/pts/", screen)
            stop = podman("stop", "-t", "20", name)
            self.assertEqual(stop.returncode, 0, stop.stderr)
            state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
            self.assertEqual(state.stdout.strip(), "exited 0")  # SIGTERM reached the workload's trap
            self.assertIn("got-term", podman("logs", name).stdout)
        finally:
            rm = podman("rm", "-f", name)
        self.assertEqual(rm.returncode, 0, rm.stderr)
        self.assertEqual(records(), [])

    def test_containers_share_the_root_disk_and_the_boot_template(self):
        # The first container of a machine boots cold and saves its boot
        # template (and the root disk is built once); the next restores it,
        # with its own /etc/hostname and hosts from the engine (injected in
        # the spec, which a restored guest gets too).
        def boot_of(name):
            for home in os.listdir(os.path.join(RUNTIME_ROOT, ".vm")):
                path = os.path.join(RUNTIME_ROOT, ".vm", home)
                if not os.path.isdir(os.path.join(path, "vms")):
                    continue
                env = dict(os.environ, MICROVM_HOME=path)
                microvm = os.path.join(BIN_DIR, "microvm")
                for vm in sh([microvm, "ps", "-a", "-q"], env=env).stdout.split():
                    info = json.loads(sh([microvm, "inspect", vm], env=env).stdout)[0]
                    if info["config"]["hostname"] == name:
                        return info["boot"]
            return None

        names = ["mvm-template-a", "mvm-template-b"]
        try:
            for name in names:
                run = podman("run", "-d", "--name", name, "--hostname", name, "--network", "none", IMAGE,
                             "sh", "-c", "cat /etc/hostname; sleep 600")
                self.assertEqual(run.returncode, 0, run.stderr)
                # The first container's template is saved once its guest is up.
                deadline = time.time() + 60
                while time.time() < deadline and name not in podman("logs", name).stdout:
                    time.sleep(0.5)
                self.assertEqual(podman("logs", name).stdout.strip(), name)
            first, second = boot_of(names[0]), boot_of(names[1])
            self.assertEqual(first["path"], "cold", first)
            self.assertIn("saving template", first["note"])
            self.assertEqual(second["path"], "template", second)
            rootfs = os.listdir(os.path.join(RUNTIME_ROOT, ".vm", "images", "rootfs"))
            self.assertEqual(len(rootfs), 1, rootfs)
            self.assertEqual(len(os.listdir(os.path.join(RUNTIME_ROOT, ".vm", "templates"))), 1)
        finally:
            for name in names:
                podman("rm", "-f", "-t", "0", name)
        self.assertEqual(records(), [])

    def test_readonly_volume_is_enforced(self):
        host = os.path.join(WORK, "vol")
        os.makedirs(host, exist_ok=True)
        with open(os.path.join(host, "file"), "w") as f:
            f.write("original\n")
        run = podman("run", "--rm", "--network", "none", "-v", host + ":/data:ro", IMAGE, "sh", "-c",
                     "cat /data/file; echo changed > /data/file && exit 9; touch /data/new && exit 9; exit 0")
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertEqual(run.stdout, "original\n")
        self.assertIn("Read-only file system", run.stderr)
        with open(os.path.join(host, "file")) as f:
            self.assertEqual(f.read(), "original\n")
        self.assertEqual(sorted(os.listdir(host)), ["file"])

    def test_interactive_terminal_gets_a_shell(self):
        # process.terminal: the pty master goes to podman's console socket, and
        # the workload runs on a tty in the guest: an interactive sh prompts,
        # `tty` names a /dev/pts device and `stty size` follows the terminal.
        if shutil.which("tmux") is None:
            self.skipTest("tmux missing")
        tmux, socket_path = tmux_server()
        done = os.path.join(WORK, "it.done")
        cmd = " ".join(PODMAN + ["run", "-it", "--rm", "--network", "none", IMAGE, "sh"])
        sh(tmux + ["new-session", "-d", "-x", "120", "-y", "30", "%s; echo $? > %s; sleep 60" % (cmd, done)])

        def screen():
            return sh(tmux + ["capture-pane", "-p", "-S", "-100"]).stdout

        def wait_screen(needle, timeout, retype=None):
            deadline = time.time() + timeout
            typed_at = time.time()
            while time.time() < deadline:
                text = screen()
                if needle in text:
                    return text
                if retype and time.time() - typed_at > 5:
                    sh(tmux + ["send-keys", retype, "Enter"])
                    typed_at = time.time()
                time.sleep(0.5)
            return screen()

        try:
            # busybox sh prints its "/ # " prompt only when stdin is a terminal
            # (capture-pane drops the trailing space).
            text = wait_screen("/ #", 150)
            self.assertRegex(text, r"(?m)^/ #$", text)
            size = sh(tmux + ["display", "-p", "#{pane_height} #{pane_width}"]).stdout.strip()
            sh(tmux + ["send-keys", "tty; stty size; echo $((6*7)) answered", "Enter"])
            text = wait_screen("42 answered", 60)
            self.assertIn("42 answered", text)
            self.assertRegex(text, r"/dev/pts/\d+", text)
            self.assertIn(size, text)
            # A resize of the terminal reaches the guest's tty.
            sh(tmux + ["resize-window", "-x", "100", "-y", "25"])
            new_size = sh(tmux + ["display", "-p", "#{pane_height} #{pane_width}"]).stdout.strip()
            self.assertNotEqual(new_size, size)
            text = wait_screen("\n" + new_size, 60, retype="stty size")
            self.assertIn("\n" + new_size, text)
            sh(tmux + ["send-keys", "exit 5", "Enter"])
            deadline = time.time() + 60
            while time.time() < deadline and not os.path.exists(done):
                time.sleep(0.5)
            with open(done) as f:
                self.assertEqual(f.read().strip(), "5")
        finally:
            end_tmux(tmux, socket_path)

    def test_runner_lives_in_the_engines_network_namespace(self):
        # A namespace with only lo, as an engine would make one: the runner joins
        # it, so a published port listens there (loopback only) and not on the host.
        if os.geteuid() != 0 or shutil.which("ip") is None:
            self.skipTest("needs root and iproute2 for a network namespace")
        netns = "microvm-podman-%d" % os.getpid()
        self.assertEqual(sh(["ip", "netns", "add", netns]).returncode, 0)
        name = "mvm-netns"
        try:
            sh(["ip", "-n", netns, "link", "set", "lo", "up"])
            port = free_port()
            run = podman("run", "-d", "--name", name, "--network", "ns:/run/netns/" + netns,
                         "--annotation", "org.microvm.publish=127.0.0.1:%d:80" % port, IMAGE, "sh", "-c",
                         "mkdir -p /www && echo served-from-vm > /www/index && exec httpd -f -p 0.0.0.0:80 -h /www")
            self.assertEqual(run.returncode, 0, run.stderr)
            fetch = ("import sys, time, urllib.request\n"
                     "for _ in range(240):\n"
                     "    try:\n"
                     "        sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:%d/index', timeout=5)"
                     ".read().decode()); break\n"
                     "    except OSError: time.sleep(0.5)\n" % port)
            inside = sh(["ip", "netns", "exec", netns, sys.executable, "-c", fetch])
            self.assertEqual(inside.stdout, "served-from-vm\n", inside.stderr + podman("logs", name).stderr)
            with socket.socket() as s:
                self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)  # nothing in the host's namespace
        finally:
            podman("rm", "-f", "-t", "0", name)
            sh(["ip", "netns", "del", netns])
        self.assertEqual(records(), [])

    def test_guest_takes_the_pods_address_in_a_namespace_with_a_veth(self):
        # As CNI leaves a pod's namespace: eth0 (a veth) with 10.88.0.2/24 and a
        # default route; its peer in a second test-made namespace is 10.88.0.1.
        # The runtime picks TAP mode: the guest owns 10.88.0.2.
        if os.geteuid() != 0 or shutil.which("ip") is None:
            self.skipTest("needs root and iproute2 for network namespaces")
        pod, peer = "mvm-pod-%d" % os.getpid(), "mvm-peer-%d" % os.getpid()
        name = "mvm-tap"
        try:
            for command in (["netns", "add", pod], ["netns", "add", peer],
                            ["-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peer],
                            ["-n", pod, "addr", "add", "10.88.0.2/24", "dev", "eth0"],
                            ["-n", pod, "link", "set", "eth0", "up"], ["-n", pod, "link", "set", "lo", "up"],
                            ["-n", pod, "route", "add", "default", "via", "10.88.0.1"],
                            ["-n", peer, "addr", "add", "10.88.0.1/24", "dev", "peer0"],
                            ["-n", peer, "link", "set", "peer0", "up"]):
                made = sh(["ip"] + command)
                self.assertEqual(made.returncode, 0, made.stderr)
            run = podman("run", "-d", "--name", name, "--network", "ns:/run/netns/" + pod, IMAGE, "sh", "-c",
                         "ip addr show eth0; while true; do echo served-at-pod-ip | nc -l -p 8080; done")
            self.assertEqual(run.returncode, 0, run.stderr)
            got = ""
            deadline = time.time() + 180
            while time.time() < deadline and "served-at-pod-ip" not in got:
                got = sh(["ip", "netns", "exec", peer, "busybox", "nc", "-w", "5", "10.88.0.2", "8080"]).stdout
                if "served-at-pod-ip" not in got:
                    time.sleep(1)
            self.assertEqual(got, "served-at-pod-ip\n", podman("logs", name).stdout)
            self.assertIn("inet 10.88.0.2/24", podman("logs", name).stdout)
        finally:
            podman("rm", "-f", "-t", "0", name)
            sh(["ip", "netns", "del", pod])
            sh(["ip", "netns", "del", peer])
        self.assertEqual(records(), [])

    def test_unsupported_field_is_refused_by_name(self):
        run = podman("run", "--rm", "--network", "none", "--read-only", IMAGE, "true")
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("root.readonly", run.stderr)
        self.assertIn("org.microvm.ignore", run.stderr)
        podman("container", "prune", "-f")
        self.assertEqual(records(), [])


class Containerd(unittest.TestCase):
    """containerd's runc shim (io.containerd.runc.v2) with the runtime as its runc binary."""

    def test_ctr_run_with_the_runtime_as_runc(self):
        if shutil.which("containerd") is None or shutil.which("ctr") is None:
            self.skipTest("containerd missing")
        base = os.path.join(WORK, "containerd")
        os.makedirs(base)
        with open(os.path.join(base, "config.toml"), "w") as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/t.sock"\n' % ((base,) * 4))
        had_run_dir = os.path.exists("/run/containerd")  # shims' sockets and ctr's fifos go there
        daemon = subprocess.Popen(["containerd", "--config", os.path.join(base, "config.toml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        namespace = "microvm-test-%d" % os.getpid()
        ctr = ["ctr", "--address", base + "/c.sock", "--namespace", namespace]
        try:
            deadline = time.time() + 30
            while time.time() < deadline and sh(ctr + ["version"]).returncode != 0:
                time.sleep(0.2)
            pulled = sh(ctr + ["images", "pull", "--plain-http", IMAGE])
            self.assertEqual(pulled.returncode, 0, pulled.stderr)
            # The shim passes its own --root and --log: the runtime's defaults hold.
            run = sh(ctr + ["run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", RUNTIME, IMAGE,
                            "ctr-test", "sh", "-c", "echo hi from containerd; exit 3"])
            self.assertEqual(run.stdout, "hi from containerd\n", run.stderr)
            self.assertEqual(run.returncode, 3, run.stderr)
            self.assertEqual(sh(ctr + ["containers", "ls", "-q"]).stdout, "")
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            if had_run_dir:
                shutil.rmtree("/run/containerd/runc/" + namespace, ignore_errors=True)
            else:
                shutil.rmtree("/run/containerd", ignore_errors=True)


class RuntimeSpec(unittest.TestCase):
    """The runtime's own lifecycle, as an engine drives it."""

    def bundle(self, args, rootfs=True, **extra):
        bundle = tempfile.mkdtemp(dir=WORK, prefix="bundle-")
        if rootfs:
            shutil.copytree(os.path.join(WORK, "rootfs"), os.path.join(bundle, "rootfs"), symlinks=True)
        spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "hostname": "spec-test",
                "process": {"args": args, "cwd": "/", "env": ["PATH=/bin:/sbin:/usr/bin"],
                            "user": {"uid": 0, "gid": 0}},
                "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}}
        spec.update(extra)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        return bundle

    def state(self, cid):
        out = runtime("state", cid)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_create_start_state_kill_delete(self):
        # Adopt the supervisor (as conmon does) to see its exit status.
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        cid = "spec-lifecycle"
        hook_out = lambda stage: os.path.join(WORK, "hook-%s.json" % stage)
        hook = lambda stage: {"path": "/bin/sh", "args": ["sh", "-c", "cat > " + hook_out(stage)]}
        ran = lambda: [st for st in ("prestart", "createRuntime", "poststart", "poststop") if os.path.exists(hook_out(st))]
        greeting = os.path.join(WORK, "greeting")
        with open(greeting, "w") as f:
            f.write("greeting-from-host\n")
        # Single-file binds are copied in; one onto a symlink in the image is not (the image keeps its link).
        binds = [{"destination": "/etc/greeting", "type": "bind", "source": greeting, "options": ["bind", "ro"]},
                 {"destination": "/etc/linked", "type": "bind", "source": greeting, "options": ["bind"]}]
        bundle = self.bundle(["sh", "-c", "echo hello from $(hostname); cat /etc/greeting; readlink /etc/linked; "
                                          "trap 'echo term; exit 7' TERM; while true; do sleep 1; done"],
                             mounts=binds,
                             hooks={stage: [hook(stage)] for stage in ("prestart", "createRuntime", "poststart",
                                                                        "poststop")})
        os.symlink("/tmp/elsewhere", os.path.join(bundle, "rootfs/etc/linked"))
        pid_file = os.path.join(WORK, "spec.pid")
        out_path = os.path.join(WORK, "spec.out")
        created = create("--bundle", bundle, "--pid-file", pid_file, cid, out_path=out_path)
        self.assertEqual(created.returncode, 0, created.stderr)
        pid = int(read(pid_file))
        state = self.state(cid)
        self.assertEqual((state["ociVersion"], state["id"], state["status"], state["pid"], state["bundle"]),
                         ("1.0.2", cid, "created", pid, bundle))
        self.assertIn("annotations", state)
        self.assertEqual(read(out_path), "")  # nothing runs before start
        self.assertEqual(ran(), ["prestart", "createRuntime"])  # hooks on the host, the state on stdin
        self.assertEqual(json.loads(read(hook_out("prestart")))["id"], cid)
        listed = json.loads(runtime("list", "--format", "json").stdout)
        self.assertEqual([c["id"] for c in listed], [cid])
        self.assertNotEqual(create("--bundle", bundle, cid).returncode, 0)  # the id is taken

        started = runtime("start", cid)
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertEqual(self.state(cid)["status"], "running")
        deadline = time.time() + 120
        while time.time() < deadline and "elsewhere" not in read(out_path):
            time.sleep(0.2)
        # The stdio create was given.
        self.assertEqual(read(out_path), "hello from spec-test\ngreeting-from-host\n/tmp/elsewhere\n")
        refused = runtime("delete", cid)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("not stopped", refused.stderr)

        os.kill(pid, signal.SIGTERM)  # a signal to the pid reaches the workload
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status))
        self.assertEqual(os.WEXITSTATUS(status), 7)  # the workload's exit code
        self.assertIn("term", read(out_path))
        self.assertEqual(self.state(cid)["status"], "stopped")
        self.assertNotEqual(runtime("kill", cid, "KILL").returncode, 0)  # not running
        deleted = runtime("delete", cid)
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertEqual(ran(), ["prestart", "createRuntime", "poststart", "poststop"])
        self.assertEqual(json.loads(read(hook_out("poststart")))["status"], "running")
        self.assertEqual(json.loads(read(hook_out("poststop")))["status"], "stopped")
        gone = runtime("state", cid)
        self.assertNotEqual(gone.returncode, 0)
        self.assertIn("does not exist", gone.stderr)
        self.assertEqual(records(), [])

    def test_kill_of_created_container_and_force_delete(self):
        cid = "spec-created"
        bundle = self.bundle(["true"])
        created = create("--bundle", bundle, cid)
        self.assertEqual(created.returncode, 0, created.stderr)
        pid = self.state(cid)["pid"]
        self.assertEqual(runtime("kill", cid, "TERM").returncode, 0)
        deadline = time.time() + 30
        while time.time() < deadline and self.state(cid)["status"] != "stopped":
            time.sleep(0.1)
        self.assertEqual(self.state(cid)["status"], "stopped")
        alive = os.path.exists("/proc/%d/stat" % pid) and read("/proc/%d/stat" % pid).split(")")[-1].split()[0] != "Z"
        self.assertFalse(alive)
        self.assertEqual(runtime("delete", "--force", cid).returncode, 0)
        self.assertEqual(records(), [])

    def test_bad_bundles_get_clear_errors_and_leave_nothing(self):
        cases = [
            (self.bundle(["true"], rootfs=False), "is not a directory"),
            (self.bundle(["true"], root={"path": "rootfs", "readonly": True}), "root.readonly"),
            (self.bundle(["true"], mounts=[{"destination": "/x", "type": "nfs", "source": "srv:/x"}]),
             "mounts[0].type"),
            (self.bundle([]), "process.args: must not be empty"),
        ]
        broken = self.bundle(["true"], rootfs=False)
        with open(os.path.join(broken, "config.json"), "w") as f:
            f.write('{"ociVersion": "1.0.2", "process": ')
        cases.append((broken, "not valid JSON"))
        cases.append((os.path.join(WORK, "no-such-bundle"), "no config.json"))
        for bundle, message in cases:
            out = create("--bundle", bundle, "--pid-file", os.path.join(WORK, "bad.pid"), "bad")
            self.assertEqual(out.returncode, 1, message)
            self.assertIn(message, out.stderr)
            self.assertEqual(records(), [], message)
            self.assertFalse(os.path.exists(os.path.join(WORK, "bad.pid")))
            # No data dir of the container; the root's shared caches may be there.
            left = set(os.listdir(RUNTIME_ROOT + "/.vm")) if os.path.isdir(RUNTIME_ROOT + "/.vm") else set()
            self.assertEqual(left - {"images", "templates"}, set(), message)

    def test_version_features_and_unknown_commands(self):
        version = runtime("--version")
        self.assertEqual(version.returncode, 0)
        self.assertIn("microvm-runtime version", version.stdout)
        features = json.loads(runtime("features").stdout)
        self.assertIn("org.microvm.ignore", features["annotations"])
        self.assertEqual(runtime("--systemd-cgroup", "--log-format", "json", "list", "-q").returncode, 0)
        self.assertNotEqual(runtime("frobnicate", "x").returncode, 0)


if __name__ == "__main__":
    BIN_DIR, SOURCE_DIR = sys.argv[1], sys.argv[2]
    missing = [tool for tool in ("podman", "conmon", "skopeo", "docker-registry") if shutil.which(tool) is None]
    if missing:
        print("skipped: %s missing (scripts/deps.sh installs them)" % ", ".join(missing))
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
