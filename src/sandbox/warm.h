/* The cgroup attach lock, taken before keyward has loaded its libraries
 * (see warm.c); and where keyward's own cgroups are. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Moves this process into its own cgroup v2, which takes the attach lock
 * (and waits for the grace period): for a run whose PID 1 will be moved
 * by its PID (sandbox.h, warm_lock). */
void sandbox_warm_take(void);

/* The path of our cgroup in the hierarchy whose /proc/self/cgroup line has
 * this controller list ("" for v2's "0::"). */
bool sandbox_own_cgroup(const char *controller, char *out, size_t outlen);
/* Where the cgroup v2 hierarchy is mounted, or NULL. */
const char *sandbox_cgroup2_mount(void);
