#!/usr/bin/env python3
"""Share of keyward's profile samples whose call stack contains a function.

    perf script -F ip,sym | perf_summary.py

Reads `perf script` output of a `perf record --call-graph dwarf` profile and
prints, for keyward's request path, which share of all samples (on-CPU time
of keyward's threads) was spent inside each listed function, children
included. Shares overlap: a sample inside write(2) of an audit batch is also
inside audit_batch_write.
"""
import sys

# (label, any of these frames on the stack, and all of these too); names as
# norm() leaves them.
ROWS = [
    ("request_done (end of each request)", ["request_done"], []),
    ("audit: formatting records (audit_batch_add, no lock)", ["audit_batch_add"], []),
    ("audit: writing a batch of records (audit_batch_write)", ["audit_batch_write"], []),
    ("  waiting for / waking on the audit mutex (futex)", ["lll_lock_wait", "lll_lock_wake"], ["audit_batch_write"]),
    ("  write(2) of the batch", ["write"], ["audit_batch_write"]),
    ("  SHA-256 of the chain", ["EVP_DigestInit_ex2", "EVP_DigestUpdate", "EVP_DigestFinal_ex"],
     ["audit_batch_write"]),
    ("read_head (client request head)", ["read_head"], []),
    ("handle_request (policy match, injection)", ["handle_request"], []),
    ("  http1_parse_head (llhttp)", ["http1_parse_head"], []),
    ("read_response_head (upstream response)", ["read_response_head"], []),
    ("  write_response_head", ["write_response_head"], []),
    ("writev(2) to sockets (libevent output)", ["writev"], []),
    ("readv(2) from sockets", ["readv"], []),
    ("ioctl(FIONREAD) before each read (libevent)", ["ioctl"], []),
    ("epoll_ctl(2) (events added/removed per request)", ["epoll_ctl"], []),
    ("epoll_wait(2)", ["epoll_wait"], []),
    ("mutex lock/unlock, any (pthread)", ["pthread_mutex_lock", "pthread_mutex_unlock_usercnt",
                                          "pthread_mutex_unlock"], []),
    ("malloc/free", ["malloc", "free", "realloc", "calloc"], []),
]


def norm(frame):
    """write_response_head.isra.0 -> write_response_head, __GI___libc_write ->
    write, __GI_epoll_ctl (inlined) -> epoll_ctl."""
    f = frame.split(" ")[0].split(".")[0].split("@")[0]
    for p in ("__GI___libc_", "__GI___", "__GI_", "__libc_", "___", "__"):
        if f.startswith(p):
            return f[len(p):]
    return f


def main():
    samples, cur = [], []
    for line in sys.stdin:
        if not line.strip():
            if cur:
                samples.append(cur)
                cur = []
            continue
        f = line.split(None, 1)
        if len(f) < 2:
            continue
        cur.append(f[1].strip().split("+")[0])
    if cur:
        samples.append(cur)
    samples = [set(norm(f) for f in s) for s in samples]
    n = len(samples)
    if not n:
        print("no samples")
        return
    print(f"{n} samples; share of keyward's on-CPU time with the function on the stack:")
    for label, anyof, allof in ROWS:
        k = sum(1 for s in samples if any(x in s for x in anyof) and all(x in s for x in allof))
        print(f"  {100 * k / n:5.1f} %  {label}")


if __name__ == "__main__":
    main()
