/* The cgroup attach lock, taken before keyward has loaded its libraries
 * (see warm.c). Built into the keyward executable (src/cli/launch.c) and
 * into libkeyward.so, which share the struct. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct sandbox_warm {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool armed; /* the taker holds no lock a clone could copy */
};

void sandbox_warm_init(struct sandbox_warm *w);
/* Moves this process into the cgroup it is in already, which takes the
 * attach lock (and waits for the grace period); says armed first. */
void sandbox_warm_take(struct sandbox_warm *w);
/* Waits until the taker may be running during a clone (sandbox_spawn). */
void sandbox_warm_armed(struct sandbox_warm *w);

/* The path of our cgroup in the hierarchy whose /proc/self/cgroup line has
 * this controller list ("" for v2's "0::"). */
bool sandbox_own_cgroup(const char *controller, char *out, size_t outlen);
/* Where the cgroup v2 hierarchy is mounted, or NULL. */
const char *sandbox_cgroup2_mount(void);
