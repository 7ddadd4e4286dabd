"""Runs as PID 1 of fresh pid, network and mount namespaces (started by isolation.py via
unshare). Standard library only, started with ``python -I -S``: it must not import anything
the sandboxed command could have written.

Reads a JSON spec on stdin, makes ``read_only`` paths read-only and covers ``hidden`` paths,
checks that there is no usable network, reports "ready" on the status fd, then runs the
command with every capability dropped and waits. When this process exits, the kernel kills
everything left in the pid namespace.
"""

import ctypes
import errno
import json
import os
import resource
import socket
import stat
import subprocess
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
ST_TO_MS = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME, 4096: MS_RELATIME}
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class SetupError(Exception):
    pass


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {target}: {os.strerror(err)}")


def preserved_flags(path):
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in ST_TO_MS.items() if f & st)


def make_read_only(path):
    mount(path, path, None, MS_BIND | MS_REC)
    mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | preserved_flags(path))
    if not os.statvfs(path).f_flag & 1:  # ST_RDONLY
        raise SetupError(f"{path} is still writable after remount")


def hide(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555")
        if os.listdir(path):
            raise SetupError(f"{path} is still visible")
    else:
        mount("/dev/null", path, None, MS_BIND)


def check_network():
    names = [name for _, name in socket.if_nameindex()]
    if any(name != "lo" for name in names):
        raise SetupError(f"network interfaces present: {len(names)}")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("127.0.0.1", 9))
    except OSError as exc:
        if exc.errno != errno.ENETUNREACH:
            raise SetupError(f"loopback probe: {exc.strerror}")
    else:
        raise SetupError("loopback is up")
    finally:
        probe.close()


def no_route_counters():
    total = 0
    try:
        lines = open("/proc/self/net/snmp").read().splitlines()
        for head, values in zip(lines[::2], lines[1::2]):
            if head.startswith("Ip:"):
                total += int(dict(zip(head.split()[1:], values.split()[1:])).get("OutNoRoutes", 0))
    except (OSError, ValueError):
        pass
    try:
        for line in open("/proc/self/net/snmp6"):
            key, _, value = line.partition(" ")
            if key == "Ip6OutNoRoutes":
                total += int(value)
    except (OSError, ValueError):
        pass
    return total


def drop_privileges(max_file_bytes):
    def run():
        os.setsid()
        if max_file_bytes:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last + 1):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(126)
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)

    return run


def main():
    spec = json.loads(sys.stdin.read())
    status = os.fdopen(spec["status_fd"], "w", buffering=1)
    send = lambda **kw: status.write(json.dumps(kw) + "\n")  # noqa: E731
    try:
        for path in spec["read_only"]:
            make_read_only(path)
        for path in spec["hidden"]:
            hide(path)
        check_network()
    except (SetupError, OSError) as exc:
        send(setup_error=str(exc))
        return 1
    before = no_route_counters()
    send(ready=True)
    try:
        child = subprocess.Popen(
            spec["argv"],
            env=spec["env"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            close_fds=True,
            preexec_fn=drop_privileges(spec.get("max_file_bytes")),
        )
    except OSError as exc:
        sys.stderr.write(f"cannot start {spec['argv'][0]}: {exc.strerror}\n")
        send(returncode=127, network_attempts=0)
        return 0
    returncode = child.wait()
    send(returncode=returncode, network_attempts=no_route_counters() - before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
