/* cgroup limits of a sandbox (see cgroup.h).
 *
 * Only directories named keyward-PID-TAG that this process created are
 * written to or removed. */
#include "sandbox/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "sandbox/sandbox.h"
#include "sandbox/warm.h"

static int write_value(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, value, strlen(value));
	int e = errno;
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -(n < 0 ? e : EIO);
}

struct want {
	char pids[32], memory[32], cpu_quota[32];
};

static bool has_word(const char *list, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = list; (p = strstr(p, w)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

/* Removes the cgroups of earlier runs whose keyward was killed before it
 * could clean up: keyward-PID where PID is gone. rmdir fails harmlessly
 * on one that still has processes. */
static void remove_stale(const char *base)
{
	DIR *d = opendir(base);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		if (strncmp(e->d_name, "keyward-", 8) != 0)
			continue;
		long pid = strtol(e->d_name + 8, &end, 10);
		if ((*end && *end != '-') || pid <= 0 || pid > INT_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		(void)rmdir(path);
	}
	closedir(d);
}

/* A new child of `base` named for pid (the sandbox's PID 1, or keyward
 * when PID 1 is to be born in it): keyward-PID-RANDOM in dir. */
static int make_dir(const char *base, pid_t pid, char *dir, size_t dirlen)
{
	/* keyward-PID-RANDOM: a cgroup left by a killed keyward whose sandbox
	 * had the same PID must not be taken for ours */
	uint32_t tag = 0;
	if (getrandom(&tag, sizeof(tag), 0) != sizeof(tag))
		tag = (uint32_t)time(NULL);
	int n = snprintf(dir, dirlen, "%s/keyward-%d-%08x", base, (int)pid, tag);
	if (n < 0 || (size_t)n >= dirlen || (size_t)n >= sizeof(((struct sandbox *)0)->cgroup[0]))
		return -ENAMETOOLONG;
	remove_stale(base);
	if (mkdir(dir, 0755) < 0)
		return -errno;
	return 0;
}

/* A new child of `base` for the sandbox, recorded for removal. */
static int make_group(struct sandbox *sb, const char *base, char *dir, size_t dirlen)
{
	if (sb->n_cgroups >= ARRAY_SIZE(sb->cgroup))
		return -ENOSPC;
	int r = make_dir(base, sb->pid, dir, dirlen);
	if (r == 0)
		snprintf(sb->cgroup[sb->n_cgroups++], sizeof(sb->cgroup[0]), "%s", dir);
	return r;
}

static int join(struct sandbox *sb, const char *dir, const char *procs_file)
{
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)sb->pid);
	return write_value(dir, procs_file, pid);
}

/* Whether dir/file (cgroup.controllers or cgroup.subtree_control of a
 * cgroup v2) lists every controller w needs. */
static bool has_controllers(const char *dir, const char *file, const struct want *w)
{
	char path[PATH_MAX], ctl[256] = "";
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(ctl, sizeof(ctl), f))
		ctl[0] = '\0';
	fclose(f);
	return !(w->pids[0] && !has_word(ctl, "pids")) && !(w->memory[0] && !has_word(ctl, "memory")) &&
	       !(w->cpu_quota[0] && !has_word(ctl, "cpu"));
}

/* The cgroup v2 directory under which a child with the wanted
 * controllers can be made: our own cgroup when its cgroup.subtree_control
 * enables them, else the hierarchy's root (writable by root only; the root cgroup is
 * exempt from the no-internal-processes rule). */
static bool v2_base(const struct want *w, char *base, size_t baselen)
{
	char own[PATH_MAX];
	if (!sandbox_own_cgroup("", own, sizeof(own)))
		return false;
	const char *mnt = sandbox_cgroup2_mount();
	if (!mnt)
		return false;
	const char *candidates[] = { streq(own, "/") ? "" : own, "" };
	for (size_t i = 0; i < ARRAY_SIZE(candidates); i++) {
		snprintf(base, baselen, "%s%s", mnt, candidates[i]);
		if (has_controllers(base, "cgroup.subtree_control", w) && access(base, W_OK) == 0)
			return true;
	}
	return false;
}

static int set_v2_limits(const char *dir, const struct want *w)
{
	char cpu[64];
	int r = 0;
	snprintf(cpu, sizeof(cpu), "%s 100000", w->cpu_quota);
	if ((w->pids[0] && (r = write_value(dir, "pids.max", w->pids)) < 0) ||
	    (w->memory[0] && (r = write_value(dir, "memory.max", w->memory)) < 0) ||
	    (w->memory[0] && (r = write_value(dir, "memory.swap.max", "0")) < 0 && r != -ENOENT) ||
	    (w->cpu_quota[0] && (r = write_value(dir, "cpu.max", cpu)) < 0))
		return r;
	return 0;
}

static int try_v2(struct sandbox *sb, const struct want *w, char *what, size_t whatlen)
{
	char base[PATH_MAX], dir[PATH_MAX];
	if (!v2_base(w, base, sizeof(base)))
		return -ENOENT;
	int r = make_group(sb, base, dir, sizeof(dir));
	if (r < 0 || (r = set_v2_limits(dir, w)) < 0 || (r = join(sb, dir, "cgroup.procs")) < 0)
		return r;
	snprintf(what, whatlen, "cgroup v2 %s", dir);
	return 0;
}

/* The cgroup v2 that PID 1 was cloned into, when its parent enables
 * every controller the limits need: the limits are written to it and
 * nothing moves. */
static int try_born(struct sandbox *sb, const struct want *w, char *what, size_t whatlen)
{
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", sb->born_cgroup);
	char *slash = strrchr(parent, '/');
	if (!slash)
		return -ENOENT; /* none */
	*slash = '\0';
	if (!has_controllers(parent, "cgroup.subtree_control", w))
		return -ENOENT;
	int r = set_v2_limits(sb->born_cgroup, w);
	if (r < 0)
		return r;
	snprintf(what, whatlen, "cgroup v2 %s (PID 1 was cloned into it)", sb->born_cgroup);
	return 0;
}

int sandbox_cgroup_prepare(struct sandbox *sb)
{
	struct want w = { "1", "", "" }; /* the default pids limit: every run has it */
	char base[PATH_MAX], dir[PATH_MAX];
	sb->born_cgroup[0] = '\0';
	/* First the one read that rules out most hosts without a usable
	 * cgroup v2 (cgroup v1, or a hybrid whose v2 has no controller) */
	const char *mnt = sandbox_cgroup2_mount();
	if (!mnt || !has_controllers(mnt, "cgroup.controllers", &w)) {
		sb->v2_unusable = true;
		return -ENOENT;
	}
	sb->warm_lock = true; /* until PID 1 is cloned into the new cgroup */
	if (!v2_base(&w, base, sizeof(base)))
		return -ENOENT;
	int r = make_dir(base, getpid(), dir, sizeof(dir));
	if (r < 0)
		return r;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		(void)rmdir(dir);
		return r;
	}
	snprintf(sb->born_cgroup, sizeof(sb->born_cgroup), "%s", dir);
	sb->warm_lock = false;
	return fd;
}

/* Whether dir/cgroup.procs lists no process but a and b. */
static bool holds_only(const char *dir, pid_t a, pid_t b)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	long pid;
	bool only = true;
	while (only && fscanf(f, "%ld", &pid) == 1)
		only = pid == a || pid == b;
	fclose(f);
	return only;
}

/* Our own cgroup v2 when it is delegated to us (we may write to it and its
 * cgroup.controllers offers the controllers) without enabling them for
 * its children, as `systemd-run --user --scope -p Delegate=yes` makes it.
 * A cgroup that holds processes cannot enable them (cgroup v2's "no
 * internal processes" rule), so when keyward and PID 1 are all it holds,
 * PID 1 moves into the sandbox's new cgroup and keyward into a leaf of its
 * own (keyward-PID-self, removed as stale by a later run), and the
 * controllers are enabled for the children. *moved: PID 1 has moved (a
 * later failure leaves it where it is). */
static int try_delegated(struct sandbox *sb, const struct want *w, bool *moved, char *what, size_t whatlen)
{
	char own[PATH_MAX], base[PATH_MAX], dir[PATH_MAX], self[PATH_MAX], me[16], enable[64] = "";
	const char *mnt = sandbox_cgroup2_mount();
	*moved = false;
	if (!mnt || !sandbox_own_cgroup("", own, sizeof(own)) || streq(own, "/"))
		return -ENOENT;
	snprintf(base, sizeof(base), "%s%s", mnt, own);
	if (!has_controllers(base, "cgroup.controllers", w) || access(base, W_OK) < 0 ||
	    !holds_only(base, getpid(), sb->pid))
		return -ENOENT;
	snprintf(me, sizeof(me), "%d", (int)getpid());
	snprintf(self, sizeof(self), "%s/keyward-%s-self", base, me);
	if (mkdir(self, 0755) < 0 && errno != EEXIST)
		return -errno;
	int r = make_group(sb, base, dir, sizeof(dir));
	if (r < 0 || (r = join(sb, dir, "cgroup.procs")) < 0) {
		(void)rmdir(self);
		return r;
	}
	*moved = true;
	snprintf(enable, sizeof(enable), "%s%s%s", w->pids[0] ? "+pids " : "", w->memory[0] ? "+memory " : "",
	         w->cpu_quota[0] ? "+cpu" : "");
	if ((r = write_value(self, "cgroup.procs", me)) < 0 ||
	    (r = write_value(base, "cgroup.subtree_control", enable)) < 0 || (r = set_v2_limits(dir, w)) < 0)
		return r;
	snprintf(what, whatlen, "cgroup v2 %s (delegated to keyward)", dir);
	return 0;
}

/* dir's `tasks` file, for PID 1 to move itself (see sandbox.h, join_fd):
 * opened here so that the kernel checks our right to move it (it checks
 * the opener's), and written by PID 1 before CMD starts. */
static int open_join(struct sandbox *sb, const char *dir)
{
	if (sb->n_join >= ARRAY_SIZE(sb->join_fd))
		return -ENOSPC;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/tasks", dir);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	sb->join_fd[sb->n_join++] = fd;
	return 0;
}

/* v1: one hierarchy per controller; each must be writable. */
static int try_v1(struct sandbox *sb, const char *controller, const char *file, const char *value, char *what,
                  size_t whatlen)
{
	char own[PATH_MAX], base[PATH_MAX], dir[PATH_MAX];
	if (!sandbox_own_cgroup(controller, own, sizeof(own)))
		return -ENOENT;
	snprintf(base, sizeof(base), "/sys/fs/cgroup/%s%s", controller, streq(own, "/") ? "" : own);
	if (access(base, W_OK) < 0)
		return -errno;
	int r = make_group(sb, base, dir, sizeof(dir));
	if (r < 0)
		return r;
	if (streq(controller, "cpu"))
		r = write_value(dir, "cpu.cfs_period_us", "100000");
	if (r == 0)
		r = write_value(dir, file, value);
	if (r == 0 && streq(controller, "memory"))
		(void)write_value(dir, "memory.memsw.limit_in_bytes", value); /* absent without swap accounting */
	if (r == 0)
		r = open_join(sb, dir);
	if (r == 0) {
		size_t l = strlen(what);
		snprintf(what + l, whatlen - l, "%scgroup v1 %s", l ? ", " : "", dir);
	}
	return r;
}

static void remove_made(struct sandbox *sb);

int sandbox_cgroup_apply(struct sandbox *sb, const struct policy_sandbox *lim, bool verbose, char *errbuf,
                         size_t errlen)
{
	struct want w = { "", "", "" };
	snprintf(w.pids, sizeof(w.pids), "%llu", (unsigned long long)(lim->pids ? lim->pids : SANDBOX_DEFAULT_PIDS));
	if (lim->memory)
		snprintf(w.memory, sizeof(w.memory), "%llu", (unsigned long long)lim->memory);
	if (lim->cpu_percent)
		snprintf(w.cpu_quota, sizeof(w.cpu_quota), "%llu", (unsigned long long)lim->cpu_percent * 1000);
	bool required = lim->pids || lim->memory || lim->cpu_percent;

	char what[1024] = "";
	bool moved = false;
	int r = -ENOENT;
	if (!sb->v2_unusable)
		r = try_born(sb, &w, what, sizeof(what));
	if (r < 0 && !sb->v2_unusable)
		r = try_v2(sb, &w, what, sizeof(what));
	if (r < 0 && !sb->v2_unusable && sb->n_cgroups == 0)
		r = try_delegated(sb, &w, &moved, what, sizeof(what));
	if (r < 0 && moved) {
		/* PID 1 is in the cgroup made for it, without every limit */
		if (required) {
			snprintf(errbuf, errlen, "cannot set the sandbox's limits in its cgroup v2 %s: %s",
			         sb->cgroup[0], strerror(-r));
			return r;
		}
		if (verbose)
			log_info("limits: cannot set them in cgroup v2 %s (%s), so no pids/memory/cpu limit beyond "
			         "the rlimits",
			         sb->cgroup[0], strerror(-r));
		return 0;
	}
	if (r == 0) {
		if (verbose)
			log_info("limits: pids %s, memory %s, cpu %s through %s", w.pids, w.memory[0] ? w.memory : "-",
			         w.cpu_quota[0] ? w.cpu_quota : "-", what);
		return 0;
	}
	remove_made(sb);
	const char *failed = NULL;
	if ((r = try_v1(sb, "pids", "pids.max", w.pids, what, sizeof(what))) < 0)
		failed = "pids";
	else if (w.memory[0] && (r = try_v1(sb, "memory", "memory.limit_in_bytes", w.memory, what, sizeof(what))) < 0)
		failed = "memory";
	else if (w.cpu_quota[0] && (r = try_v1(sb, "cpu", "cpu.cfs_quota_us", w.cpu_quota, what, sizeof(what))) < 0)
		failed = "cpu";
	if (!failed) {
		sb->join_required = required;
		sb->join_verbose = verbose;
		if (verbose)
			log_info("limits: pids %s, memory %s, cpu quota %s through %s", w.pids,
			         w.memory[0] ? w.memory : "-", w.cpu_quota[0] ? w.cpu_quota : "-", what);
		return 0;
	}
	remove_made(sb);
	if (required) {
		snprintf(errbuf, errlen,
		         "the policy sets sandbox limits (memory, pids or cpu) and keyward has no cgroup it may write "
		         "them to (%s: %s); start keyward alone in a delegated cgroup v2 (systemd-run --user --scope "
		         "-p Delegate=yes keyward run ...) or as root, or remove them (processes: caps the number "
		         "of processes without a cgroup)",
		         failed, strerror(-r));
		return -EPERM;
	}
	if (verbose)
		log_info("limits: no writable cgroup (%s), so no pids/memory/cpu limit beyond the rlimits",
		         strerror(-r));
	return 0;
}

void sandbox_cgroup_unjoin(struct sandbox *sb)
{
	for (size_t i = 0; i < sb->n_join; i++)
		close(sb->join_fd[i]);
	sb->n_join = 0;
}

/* The last processes may still be on their way out. */
static void remove_dir(const char *dir)
{
	for (int tries = 0; rmdir(dir) < 0 && errno == EBUSY && tries < 50; tries++)
		nanosleep(&(struct timespec){ .tv_nsec = 2 * 1000 * 1000 }, NULL);
}

/* The cgroups made to move PID 1 into (not the one it was born in, which
 * holds it until it has been moved or has ended). */
static void remove_made(struct sandbox *sb)
{
	sandbox_cgroup_unjoin(sb);
	for (size_t i = sb->n_cgroups; i-- > 0;)
		remove_dir(sb->cgroup[i]);
	sb->n_cgroups = 0;
}

void sandbox_cgroup_remove(struct sandbox *sb)
{
	remove_made(sb);
	if (sb->born_cgroup[0])
		remove_dir(sb->born_cgroup);
	sb->born_cgroup[0] = '\0';
}
