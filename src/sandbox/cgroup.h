/* cgroup limits of a sandbox: memory, pids and CPU. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"
#include "policy/policy.h"

struct sandbox;

#define SANDBOX_DEFAULT_PIDS 4096

/* Gives sb->pid the policy's limits, trying in turn: the cgroup v2 it was
 * cloned into (sandbox_cgroup_prepare); a new cgroup v2 under our own
 * cgroup or the v2 root whose cgroup.subtree_control enables the
 * controllers; our own cgroup v2 when it is delegated to us and holds only
 * keyward and PID 1 (both move into children of it); v1 hierarchies we may
 * write to (as root), whose `tasks` files are left open in sb->join_fd for
 * PID 1 to move itself (sandbox_finish). A limit the policy sets that cannot be applied is an
 * error; keyward's default pids limit is applied where it can be. */
int sandbox_cgroup_apply(struct sandbox *sb, const struct policy_sandbox *limits, bool verbose, char *errbuf,
                         size_t errlen) WUR;

/* For sandbox_clone(): a new cgroup v2 for the sandbox, under the same
 * parent as sandbox_cgroup_apply() would choose for the default pids
 * limit, into which PID 1 is then cloned (clone3's CLONE_INTO_CGROUP).
 * Moving a process into a cgroup takes the kernel's cgroup threadgroup
 * lock for writing, which waits for an RCU grace period when nothing took
 * it in the last moments: 8-16 ms measured here for a move after 100 ms
 * of quiet, against 0.3 ms for a clone into the cgroup, which takes that
 * lock for reading only. sandbox_cgroup_apply() then only writes the
 * limits, unless they need a controller the parent does not delegate.
 * Returns the cgroup's descriptor (the caller closes it) with its path in
 * sb->born_cgroup, or a negative errno (no cgroup v2 with the pids
 * controller to write to: cgroup v1 is used as before). */
int sandbox_cgroup_prepare(struct sandbox *sb);

/* Closes the `tasks` files PID 1 has not joined (or has). */
void sandbox_cgroup_unjoin(struct sandbox *sb);

/* Removes the cgroups created for the sandbox (once its processes are gone). */
void sandbox_cgroup_remove(struct sandbox *sb);
