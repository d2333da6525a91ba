/* `keyward run`: the namespace sandbox that untrusted code runs in.
 *
 * sandbox_spawn() clones a child into new user, mount, PID, network, IPC,
 * UTS and cgroup namespaces before the caller has loaded any secret. The
 * child waits until sandbox_start() has written its identity maps; it then
 * builds its file system, takes keyward's CA certificate from
 * sandbox_send_ca(), opens the
 * sandbox's only network door (a listening socket on 127.0.0.1 inside its
 * own network namespace, handed back over SCM_RIGHTS), drops every
 * privilege, puts up the Landlock and seccomp fences, and becomes PID 1:
 * it starts CMD, forwards signals to it, reaps orphans and exits with
 * CMD's status. See docs/sandbox.md and docs/threat-model.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"
#include "policy/policy.h"
#include "sandbox/warm.h"

#define SANDBOX_UID  1000
#define SANDBOX_GID  1000
#define SANDBOX_HOME "/home/sandbox"

/* Everything the child needs; read by the child from its copy of the
 * parent's memory, so all of it must be set before sandbox_spawn(). */
struct sandbox_config {
	const struct policy *policy; /* sandbox: section and credential placeholders */
	const char *workspace;       /* absolute and resolved (realpath) */
	char *const *argv;           /* CMD and its arguments */
	const char *const *hide;     /* host paths that must not be visible even if under a bound path */
	size_t n_hide;
	char *self_args; /* keyward's own argv area, wiped in PID 1 */
	size_t self_args_len;
	bool verbose;
	struct sandbox_warm *warm; /* or NULL */
};

struct sandbox {
	pid_t pid;           /* PID 1 of the sandbox, as the host sees it */
	int ctl;             /* our end of the control socket */
	int listen_fd;       /* the door: accept() on it serves the sandbox */
	uint16_t port;       /* its port on the sandbox's 127.0.0.1 */
	char cgroup[4][256]; /* cgroup directories created for it, removed by sandbox_cleanup() */
	size_t n_cgroups;
};

/* Clones the sandbox's PID 1, which waits for sandbox_start(). Returns 0 or
 * a negative errno with errbuf set. */
int sandbox_spawn(const struct sandbox_config *cfg, struct sandbox *sb, char *errbuf, size_t errlen) WUR;

/* Writes the identity maps; the child then builds its file system. On
 * failure the child has been killed and reaped. */
int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb, char *errbuf, size_t errlen) WUR;

/* Sends this run's CA certificate (PEM); the child installs it at the end
 * of its build. May be called from another thread than the others. */
int sandbox_send_ca(struct sandbox *sb, const char *ca_pem) WUR;

/* Moves the child into its cgroup with the policy's limits. Moving a
 * process between cgroups can wait for a kernel RCU grace period (~12 ms
 * on cgroup v1), which overlaps with the child's build. On failure the
 * child has been killed and reaped. */
int sandbox_limit(const struct sandbox_config *cfg, struct sandbox *sb, char *errbuf, size_t errlen) WUR;

/* Waits until the sandbox is built and lets CMD start: only after
 * sandbox_limit(), so that CMD and all it forks are in the cgroup. On
 * success sb->listen_fd is the door. On failure the child has been killed
 * and reaped. */
int sandbox_finish(struct sandbox *sb, char *errbuf, size_t errlen) WUR;

/* Removes what sandbox_start() created outside the sandbox (cgroups) and
 * closes the descriptors. */
void sandbox_cleanup(struct sandbox *sb);

/* Exit status of `keyward run` for a wait status of PID 1: its exit code,
 * or 128+N if it died of signal N. */
int sandbox_exit_code(int wstatus);
