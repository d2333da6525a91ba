/* The cgroup attach lock, taken early.
 *
 * Moving a process into a cgroup by its PID takes the kernel's cgroup
 * threadgroup lock for writing, and the first writer after a quiet spell
 * waits for an RCU grace period (about 10 ms here) before it has the
 * lock; writers within a grace period or so after the last one do not
 * wait. So where keyward will move the sandbox's PID 1 by its PID (a
 * cgroup v2 with the pids controller that PID 1 could not be cloned
 * into), the keyward executable, before it loads libkeyward.so and its
 * libraries (3 ms), moves itself into the cgroup it is already in (a
 * no-op migration, which takes the lock all the same, and which the
 * kernel may refuse after taking it): the grace period then passes while
 * the libraries load, the policy is read and the sandbox builds itself,
 * and moving PID 1 later waits less. On cgroup v1, PID 1 moves itself
 * through a `tasks` file, which takes no such lock (sandbox.h, join_fd),
 * and nothing is warmed. Best effort: nothing depends on it but the
 * time. */
#include "sandbox/warm.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/util.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

bool sandbox_own_cgroup(const char *controller, char *out, size_t outlen)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return false;
	char line[PATH_MAX + 64];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		const char *list = c1 + 1;
		bool match = !*controller ? (line[0] == '0' && !*list) : false;
		for (char *save = NULL, *tok = *controller ? strtok_r((char *)list, ",", &save) : NULL; tok;
		     tok = strtok_r(NULL, ",", &save))
			match = match || streq(tok, controller);
		if (match) {
			snprintf(out, outlen, "%s", c2 + 1);
			found = true;
		}
	}
	fclose(f);
	return found;
}

static bool is_cgroup2(const char *path)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
}

const char *sandbox_cgroup2_mount(void)
{
	return is_cgroup2("/sys/fs/cgroup")           ? "/sys/fs/cgroup"
	       : is_cgroup2("/sys/fs/cgroup/unified") ? "/sys/fs/cgroup/unified"
	                                              : NULL;
}

static bool warm_target(char *out, size_t outlen)
{
	char own[PATH_MAX];
	const char *mnt = sandbox_cgroup2_mount();
	if (!mnt || !sandbox_own_cgroup("", own, sizeof(own)))
		return false;
	snprintf(out, outlen, "%s%s/cgroup.procs", mnt, streq(own, "/") ? "" : own);
	return access(out, W_OK) == 0;
}

void sandbox_warm_take(void)
{
	char target[PATH_MAX];
	if (!warm_target(target, sizeof(target)))
		return;
	int fd = open(target, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		(void)!write(fd, "0", 1); /* "0": the writer itself */
		close(fd);
	}
}
