#!/usr/bin/python3
"""Interleaved A/B of `keyward run` start-up: two or more keyward builds
(or one build under different environments), run alternately, so that a
shared machine's drift falls on every side alike.

    bench/run_ab.py [--runs N] [--warmup N] [--gap MS] [--workdir DIR]
                    SIDE SIDE [SIDE...] [-- RUN-ARGS...]

A SIDE is the path of a keyward executable (its libkeyward.so next to
it), optionally prefixed by NAME=VALUE@ to run it with that variable set:
`KW_X=1@/tmp/b/keyward`. RUN-ARGS go between `run` and `-- /bin/true`
(e.g. `--policy FILE`). Each round runs every side once, the order
reversed every other round; the first --warmup rounds are not counted.
--gap MS sleeps that long before each run, as when people launch runs
by hand (the kernel's cgroup lock then waits for a grace period).
Prints, per side, the median, mean and quartiles of the wall time
(posix_spawn to wait4), and the median CPU time of the whole process tree
(rusage of wait4: keyward, the sandbox and /bin/true).

KEYWARD_HOME must name a state directory (mode 0700) that every side
may use; the working directory (--workdir, default the current one) is
the sandbox's workspace.
"""
import argparse
import os
import statistics
import sys
import time


def parse_side(text):
    env = {}
    path = text
    if "@" in text:
        assignment, path = text.split("@", 1)
        name, _, value = assignment.partition("=")
        if not name:
            sys.exit(f"run_ab: bad side {text!r}: expected NAME=VALUE@PATH")
        env[name] = value
    if not os.access(path, os.X_OK):
        sys.exit(f"run_ab: {path}: not an executable")
    return text, path, env


def run_once(path, env, run_args, devnull):
    argv = [path, "run", *run_args, "--", "/bin/true"]
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(path, argv, env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"run_ab: {' '.join(argv)} failed (wait status {status})")
    return wall * 1e3, (usage.ru_utime + usage.ru_stime) * 1e3


def main():
    argv = sys.argv[1:]
    run_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description="interleaved A/B of keyward run -- /bin/true")
    ap.add_argument("--runs", type=int, default=400, help="counted runs per side (400)")
    ap.add_argument("--warmup", type=int, default=5, help="rounds not counted (5)")
    ap.add_argument("--gap", type=float, default=0, help="ms of sleep before each run (0)")
    ap.add_argument("--workdir", default=".", help="the sandbox's workspace (the current directory)")
    ap.add_argument("sides", nargs="+")
    args = ap.parse_args(argv)
    if len(args.sides) < 2 or len(set(args.sides)) != len(args.sides):
        ap.error("give at least two different sides")
    if not os.environ.get("KEYWARD_HOME"):
        sys.exit("run_ab: set KEYWARD_HOME to a state directory (mode 0700)")
    sides = [parse_side(s) for s in args.sides]
    os.chdir(args.workdir)
    devnull = os.open(os.devnull, os.O_WRONLY)
    wall = {name: [] for name, _, _ in sides}
    cpu = {name: [] for name, _, _ in sides}
    for i in range(args.warmup + args.runs):
        order = sides if i % 2 == 0 else sides[::-1]
        for name, path, extra in order:
            if args.gap > 0:
                time.sleep(args.gap / 1e3)
            w, c = run_once(path, {**os.environ, **extra}, run_args, devnull)
            if i >= args.warmup:
                wall[name].append(w)
                cpu[name].append(c)
    for name, _, _ in sides:
        t = sorted(wall[name])
        q = statistics.quantiles(t, n=4)
        print(f"{name}: median {statistics.median(t):.2f} ms, mean {statistics.mean(t):.2f}, "
              f"quartiles {q[0]:.2f}-{q[2]:.2f}, CPU {statistics.median(cpu[name]):.2f} ms "
              f"({len(t)} runs)")


if __name__ == "__main__":
    main()
