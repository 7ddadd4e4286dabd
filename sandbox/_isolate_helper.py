"""Runs as PID 1 of fresh pid, network and mount namespaces (started by isolation.py via
unshare). Standard library only, started with ``python -I -S``: it must not import anything
the sandboxed command could have written.

Reads a JSON spec on stdin, makes ``read_only`` paths read-only and covers ``hidden`` paths,
checks that there is no usable network, reports "ready" on the status fd, then runs the
command with every capability dropped and waits. When this process exits, the kernel kills
everything left in the pid namespace.

With a ``view`` in the spec (``lightbox vendor check``), the command instead gets a private
root built from the view's plan (read-only binds, a bounded writable output and /tmp, fresh
/proc, a few devices), pivoted into so nothing else of the host is reachable. It runs as the
view's uid/gid inside a user namespace of its own, so its process limit (RLIMIT_NPROC) counts
only its own processes. Afterwards this process kills what is left, measures what was written,
and copies the output (regular files, directories, symbolic links as links) to the host.
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
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
ST_TO_MS = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME, 4096: MS_RELATIME}
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_DUMPABLE, CLONE_NEWUSER, MNT_DETACH = 4, 0x10000000, 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SUPERVISE_SECONDS = 0.05

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.unshare.argtypes = [ctypes.c_int]


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
            raise SetupError(f"loopback probe: {exc.strerror}") from exc
    else:
        raise SetupError("loopback is up")
    finally:
        probe.close()


def no_route_counters():
    total = 0
    try:
        lines = open("/proc/self/net/snmp").read().splitlines()
        # The kernel's own table: a trailing unpaired line or a short row is read as far as it goes.
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            if head.startswith("Ip:"):
                total += int(dict(zip(head.split()[1:], values.split()[1:], strict=False)).get("OutNoRoutes", 0))
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


# -- private root (view mode) ---------------------------------------------------


def _parents(path):
    """Creates the missing parents of ``path`` (0755, so the unprivileged command can pass)."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)


def bind_read_only(source, target):
    _parents(target)
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif not os.path.exists(target):
        open(target, "w").close()
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | preserved_flags(target))
    if not os.statvfs(target).f_flag & 1:
        raise SetupError(f"{target} is still writable after remount")


def bind_device(name, root):
    target = os.path.join(root, "dev", name)
    open(target, "w").close()
    mount(os.path.join("/dev", name), target, None, MS_BIND)


def build_view(view, hidden):
    """Builds the private root under ``view['root']`` from the plan; returns an fd of the host
    directory that receives the output (kept across the pivot, unreachable by the command)."""
    root = view["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=8192,mode=0755")
    out_fd = os.open(view["output_host"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for op in view["plan"]:
        kind, target = op[0], root + op[1]
        if kind == "bind":
            bind_read_only(op[2], target)
        elif kind == "symlink":
            _parents(target)
            os.symlink(op[2], target)
        elif kind == "file":
            _parents(target)
            with open(target, "w") as handle:
                handle.write(op[2])
            os.chmod(target, 0o644)
        elif kind == "tmpfs":
            _parents(target)
            os.makedirs(target, mode=0o755, exist_ok=True)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, op[2])
        elif kind == "proc":
            os.makedirs(target, mode=0o555, exist_ok=True)
            mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif kind == "dev":
            os.makedirs(target, mode=0o755, exist_ok=True)
            for name in op[2]:
                bind_device(name, root)
        else:
            raise SetupError(f"unknown view step {kind}")
    for path in hidden:
        if os.path.lexists(root + path):
            hide(root + path)
    pivot = SYS_PIVOT_ROOT.get(os.uname().machine)
    if pivot is None:
        raise SetupError(f"pivot_root: unsupported machine {os.uname().machine}")
    os.chdir(root)
    os.mkdir(".oldroot", 0o700)
    if libc.syscall(pivot, b".", b".oldroot") != 0:
        raise SetupError(f"pivot_root: {os.strerror(ctypes.get_errno())}")
    os.chdir("/")
    if libc.umount2(b"/.oldroot", MNT_DETACH) != 0:
        raise SetupError(f"umount old root: {os.strerror(ctypes.get_errno())}")
    os.rmdir("/.oldroot")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    # Not dumpable: the command cannot reach our fds (the host output dir) through /proc/1.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return out_fd


def used(path):
    """(bytes, inodes) in use on the file system at ``path``."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def count_tasks():
    """Threads of every process in this pid namespace but ours (RLIMIT_NPROC counts threads)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1":
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat_line = handle.read()
            total += int(stat_line[stat_line.rindex(b")") + 2 :].split()[17])
        except (OSError, ValueError, IndexError):
            continue
    return total


def start_confined(view, argv, env, cwd):
    """Forks the command into a user namespace of its own as view uid/gid; returns its pid or
    raises OSError with what failed. The map is written from here (privileged over the child's
    namespace), so this works whether we are real root or root of an outer user namespace."""
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            # Nothing of ours may cross the exec: least of all the fd of the host output directory.
            keep = sorted((sync_w, go_r, err_w))
            os.closerange(3, keep[0])
            os.closerange(keep[0] + 1, keep[1])
            os.closerange(keep[1] + 1, keep[2])
            os.closerange(keep[2] + 1, 1 << 16)
            os.setsid()
            try:
                os.setgroups([])
            except PermissionError:
                if view["drop_groups"]:
                    raise
            if libc.unshare(CLONE_NEWUSER) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER): " + os.strerror(ctypes.get_errno()))
            os.write(sync_w, b"u")
            if os.read(go_r, 1) != b"g":
                raise OSError(errno.EPERM, "user namespace map was not written")
            uid, gid = view["uid"], view["gid"]
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            limit = view["max_processes"]
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
            if view.get("max_file_bytes"):
                resource.setrlimit(resource.RLIMIT_FSIZE, (view["max_file_bytes"], view["max_file_bytes"]))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            last = int(open("/proc/sys/kernel/cap_last_cap").read())
            for cap in range(last + 1):
                if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "cannot drop capabilities")
            libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot set no_new_privs")
            fd = os.open("/dev/null", os.O_RDONLY)
            os.dup2(fd, 0)
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot enter the working directory {cwd}: {exc.strerror}") from None
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(err_w, (exc.strerror or str(exc)).encode(errors="replace")[:500])
        except BaseException as exc:  # noqa: BLE001 - anything before exec: report, never run unconfined
            os.write(err_w, repr(exc).encode(errors="replace")[:500])
        os._exit(127)
    os.close(sync_w)
    os.close(go_r)
    os.close(err_w)
    try:
        if os.read(sync_r, 1) == b"u":
            inside, outside = view["uid"], view["outside_uid"]
            with open(f"/proc/{pid}/setgroups", "w") as handle:
                handle.write("deny")
            with open(f"/proc/{pid}/uid_map", "w") as handle:
                handle.write(f"{inside} {outside} 1\n")
            with open(f"/proc/{pid}/gid_map", "w") as handle:
                handle.write(f"{view['gid']} {view['outside_gid']} 1\n")
            os.write(go_w, b"g")
    except OSError:
        pass  # the child reads no "g" and reports; it never runs unmapped
    finally:
        os.close(sync_r)
        os.close(go_w)
    error = b""
    while chunk := os.read(err_r, 4096):
        error += chunk
    os.close(err_r)
    if error:
        os.waitpid(pid, 0)
        raise OSError(errno.EPERM, error.decode(errors="replace"))
    return pid


def supervise(pid):
    """Waits for ``pid``, reaping orphans; returns (exit code, peak tasks, tasks at its exit).
    The command is counted before it is reaped, so a fork bomb whose processes are still alive
    at the end shows at the limit however the sampling fell."""
    peak = 0
    while True:
        done = False
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None:
                break
            if info.si_pid == pid:
                done = True
                break
            os.waitpid(info.si_pid, 0)
        if done:
            break
        peak = max(peak, count_tasks())
        time.sleep(SUPERVISE_SECONDS)
    at_exit = count_tasks()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), max(peak, at_exit), at_exit


def kill_all():
    """As PID 1 of the namespace: SIGKILL everything else until nothing is left to reap."""
    while True:
        try:
            os.kill(-1, 9)
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, 0):
                pass
        except ChildProcessError:
            return


def copy_out(source, dest_fd):
    """Copies the output tree to the host directory ``dest_fd``: directories, regular files
    (hard links kept as links) and symbolic links (as links, never followed). Returns how many
    entries were left behind (FIFOs, sockets, paths too long)."""
    left_behind = 0
    seen = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(source, rel))
        except OSError:
            left_behind += 1
            continue
        for name in names:
            r = os.path.join(rel, name)
            src = os.path.join(source, r)
            try:
                st = os.lstat(src)
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(r, 0o755, dir_fd=dest_fd)
                    stack.append(r)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), r, dir_fd=dest_fd)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        os.link(seen[key], r, src_dir_fd=dest_fd, dst_dir_fd=dest_fd, follow_symlinks=False)
                        continue
                    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        fout = os.open(r, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dest_fd)
                        try:
                            while chunk := os.read(fin, 1 << 20):
                                os.write(fout, chunk)
                        finally:
                            os.close(fout)
                    finally:
                        os.close(fin)
                    seen[key] = r
                else:
                    left_behind += 1
            except OSError:
                left_behind += 1
    return left_behind


def run_in_view(spec, send):
    view = spec["view"]
    try:
        out_fd = build_view(view, spec["hidden"])
        check_network()
        base_out, base_tmp = used(view["output"]), used("/tmp")
    except (SetupError, OSError) as exc:
        send(setup_error=str(exc))
        return 1
    before = no_route_counters()
    send(ready=True)
    try:
        pid = start_confined(view, spec["argv"], spec["env"], spec["cwd"])
    except OSError as exc:
        sys.stderr.write(f"cannot start {spec['argv'][0]}: {exc.strerror}\n")
        send(returncode=127, network_attempts=0)
        return 0
    returncode, peak, left = supervise(pid)
    kill_all()
    attempts = no_route_counters() - before
    out_now, tmp_now = used(view["output"]), used("/tmp")
    left_behind = copy_out(view["output"], out_fd)
    out_st = os.statvfs(view["output"])
    send(
        returncode=returncode,
        network_attempts=attempts,
        peak_tasks=peak,
        tasks_at_exit=left,
        output_files=out_now[1] - base_out[1],
        output_bytes=out_now[0] - base_out[0],
        output_inodes_full=out_st.f_ffree == 0,
        output_space_full=out_st.f_bavail == 0,
        tmp_files=tmp_now[1] - base_tmp[1],
        tmp_bytes=tmp_now[0] - base_tmp[0],
        left_behind=left_behind,
    )
    return 0


def main():
    spec = json.loads(sys.stdin.read())
    status = os.fdopen(spec["status_fd"], "w", buffering=1)
    send = lambda **kw: status.write(json.dumps(kw) + "\n")  # noqa: E731
    if spec.get("view"):
        return run_in_view(spec, send)
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
