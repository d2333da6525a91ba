/* cgroup limits of a sandbox: memory, pids and CPU. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"
#include "policy/policy.h"

struct sandbox;

#define SANDBOX_DEFAULT_PIDS 4096

/* Puts sb->pid into a new cgroup with the policy's limits: cgroup v2 where
 * our own cgroup delegates the controllers, else v1 hierarchies we may
 * write to (as root). A limit the policy sets that cannot be applied is an
 * error; keyward's default pids limit is applied where it can be. */
int sandbox_cgroup_apply(struct sandbox *sb, const struct policy_sandbox *limits, bool verbose, char *errbuf,
                         size_t errlen) WUR;

/* Removes the cgroups created for the sandbox (once its processes are gone). */
void sandbox_cgroup_remove(struct sandbox *sb);
