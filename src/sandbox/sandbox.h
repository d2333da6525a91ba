/* `keyward run`: the namespace sandbox that untrusted code runs in.
 *
 * sandbox_clone() clones a child into new user, mount, PID, IPC, UTS and
 * cgroup namespaces as keyward starts, before it has loaded its libraries,
 * its policy or any secret, and writes the child's identity maps. The
 * child makes its own network namespace and builds the parts of its file
 * system that every sandbox has; it then takes the rest of its
 * configuration from sandbox_configure() and keyward's CA certificate from
 * sandbox_send_ca(), opens the sandbox's only network door (a listening
 * socket on 127.0.0.1 inside its own network namespace, handed back over
 * SCM_RIGHTS), drops every privilege, puts up the Landlock and seccomp
 * fences, and becomes PID 1: it starts CMD, forwards signals to it, reaps
 * orphans and exits with CMD's status. See docs/sandbox.md and
 * docs/threat-model.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"
#include "policy/policy.h"

#define SANDBOX_UID  1000
#define SANDBOX_GID  1000
#define SANDBOX_HOME "/home/sandbox"

/* What PID 1 needs from the policy and the command line, built by
 * keyward in the arena (sandbox_alloc), memory it shares with PID 1, and
 * sent with sandbox_configure(). Every pointer points into the arena. */
struct sandbox_spec {
	const char *workspace;       /* absolute and resolved (realpath) */
	struct policy_sandbox sb;    /* the policy's sandbox: section */
	const char *const *cred_env; /* NAME, PLACEHOLDER of each credential with env:; NULL-terminated */
	const char *const *hide;     /* host paths that must not be visible even if under a bound path */
	size_t n_hide;
	int cmd; /* CMD and its arguments are keyward's argv[cmd] on */
	bool verbose;
	bool own_group; /* PID 1 and CMD in a process group of their own (sandbox_own_group()) */
};

/* Whether the sandbox gets a process group of its own: unless keyward is
 * the foreground job of its controlling terminal, where CMD must share its
 * group to read the terminal and to get Ctrl-C and Ctrl-Z from it. */
bool sandbox_own_group(void);

struct sandbox {
	pid_t pid;           /* PID 1 of the sandbox, as the host sees it; -1: none */
	int ctl;             /* our end of the control socket */
	int listen_fd;       /* the door: accept() on it serves the sandbox */
	uint16_t port;       /* its port on the sandbox's 127.0.0.1 */
	char cgroup[4][256]; /* cgroup directories created for it, removed by sandbox_cleanup() */
	size_t n_cgroups;
	char born_cgroup[256]; /* the cgroup v2 it was cloned into, or "": removed by sandbox_cleanup() */
	/* Not cloned into a cgroup although the cgroup v2 offers the pids
	 * controller: keyward will move PID 1 into one by its PID, and takes
	 * the kernel's lock for it early (sandbox_warm_take) */
	bool warm_lock;
	/* No cgroup v2 hierarchy offers the pids controller, which every
	 * sandbox's cgroup needs (sandbox_cgroup_prepare found its root's
	 * cgroup.controllers without it, or no cgroup v2 at all): the limits
	 * go to cgroup v1 without looking at v2 again */
	bool v2_unusable;
	/* cgroup v1 `tasks` files of cgroup[0..n_join) that PID 1 writes "0"
	 * to, moving itself (sandbox_finish): a task that moves itself does not
	 * take the kernel's cgroup threadgroup lock, whose first taking after a
	 * quiet spell waits an RCU grace period (~10 ms), as moving it by its
	 * PID does. */
	int join_fd[4];
	size_t n_join;
	bool join_required; /* the policy sets the limits: a failed join stops the run */
	bool join_verbose;
	int clone_err; /* < 0: sandbox_clone() failed, for the reason in clone_msg */
	char clone_msg[512];
	char *arena; /* shared with PID 1 */
	size_t arena_size, arena_used;
	int argc; /* keyward's own arguments */
	char **argv;
};

/* Clones the sandbox's PID 1 and writes its identity maps. PID 1 then
 * builds what does not depend on the policy (its root with the system's
 * folders, /etc, /dev, /proc) while keyward reads the policy, and waits for
 * sandbox_configure(). Called first thing, with no other thread running:
 * the clone copies the calling thread alone. argc and argv are keyward's
 * own (main's). Returns 0, or a negative errno with sb->clone_msg set (and
 * no child). */
int sandbox_clone(struct sandbox *sb, int argc, char **argv);

/* Memory for the spec, in the arena; NULL when it is full. */
void *sandbox_alloc(struct sandbox *sb, size_t n);
char *sandbox_strdup(struct sandbox *sb, const char *s);

/* Sends the spec (in the arena); PID 1 finishes its file system with it. */
int sandbox_configure(struct sandbox *sb, const struct sandbox_spec *spec) WUR;

/* Sends this run's CA certificate (PEM), after sandbox_configure(); the
 * child installs it at the end of its build. May be called from another
 * thread than the others. */
int sandbox_send_ca(struct sandbox *sb, const char *ca_pem) WUR;

/* Sets the policy's limits on the cgroup v2 the child was cloned into, or
 * moves the child into a new cgroup with them (sandbox_cgroup_apply; on
 * cgroup v1 the child moves itself in sandbox_finish()). Moving a process
 * by its PID can wait for a kernel RCU grace period (8-16 ms here), which
 * overlaps with the child's build. On failure the child has been killed
 * and reaped. */
int sandbox_limit(struct sandbox *sb, const struct policy_sandbox *limits, bool verbose, char *errbuf,
                  size_t errlen) WUR;

/* Waits until the sandbox is built, has PID 1 join the cgroup v1 groups
 * sandbox_limit() made, and lets CMD start: only after sandbox_limit(), so
 * that CMD and all it forks are in the cgroup. On success sb->listen_fd is
 * the door. On failure the child has been killed and reaped. */
int sandbox_finish(struct sandbox *sb, char *errbuf, size_t errlen) WUR;

/* Kills and reaps PID 1 if it is still there (a run that stops before
 * CMD starts). */
void sandbox_kill(struct sandbox *sb);

/* Removes what was created outside the sandbox (cgroups), closes the
 * descriptors and unmaps the arena. */
void sandbox_cleanup(struct sandbox *sb);

/* Exit status of `keyward run` for a wait status of PID 1: its exit code,
 * or 128+N if it died of signal N. */
int sandbox_exit_code(int wstatus);
