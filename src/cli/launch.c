/* The keyward executable: a small front that loads libkeyward.so, where
 * every command lives, and calls its entry point.
 *
 * Why a front: a program linked with OpenSSL and libevent runs no code of
 * its own until the dynamic loader has mapped and relocated them, about
 * 3 ms, and `keyward run` has two things to start sooner. This front needs
 * only the C library. For `run` it first clones the sandbox's PID 1
 * (sandbox_clone), which builds what every sandbox has while keyward loads
 * its library and reads its policy. Then a second thread loads the library
 * and runs the command, while the main thread takes the kernel's cgroup
 * attach lock where PID 1 will be moved by its PID (a cgroup v2 that it
 * could not be cloned into), whose first taking after a quiet spell waits
 * about 10 ms (sandbox/warm.c). Every other command is called on the main thread, as
 * in any program.
 *
 * A third thread used to make OpenSSL's first use while the library
 * loaded. On two CPUs, where PID 1 builds its root at the same time, it
 * only took CPU time from the loading, and its first use raced the CA
 * thread's, both building the same method tables: without it a run takes
 * 0.4-0.5 ms less at the median and ~1 ms less CPU (bench/README.md).
 *
 * The library is looked for next to the executable (a build tree), then in
 * the folder it is installed to (KEYWARD_LIBDIR); both are as trusted as
 * the executable itself, and no environment variable changes the choice. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "sandbox/sandbox.h"
#include "sandbox/warm.h"

#define LIBRARY "libkeyward.so"

/* The sandbox cloned for `run`, or NULL. */
static struct sandbox *cloned;

/* The entry point, or exit with status `fail`. */
static cli_entry_fn *load(int fail)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	char *slash = n > 0 ? memrchr(path, '/', (size_t)n) : NULL;
	if (slash && (size_t)(slash - path) + sizeof("/" LIBRARY) <= sizeof(path)) {
		memcpy(slash, "/" LIBRARY, sizeof("/" LIBRARY));
		if (access(path, F_OK) < 0)
			slash = NULL;
	} else {
		slash = NULL;
	}
	if (!slash)
		snprintf(path, sizeof(path), "%s/%s", KEYWARD_LIBDIR, LIBRARY);
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	cli_entry_fn *entry = lib ? (cli_entry_fn *)dlsym(lib, CLI_ENTRY) : NULL;
	if (!entry) {
		fprintf(stderr, "keyward: cannot load its library: %s\n", dlerror());
		if (cloned) {
			sandbox_kill(cloned);
			sandbox_cleanup(cloned); /* its cgroup */
		}
		_exit(fail); /* stderr is unbuffered */
	}
	return entry;
}

struct body {
	int argc;
	char **argv;
	struct cli_launch launch;
	sigset_t mask;
};

/* `run` on its own thread: the process ends when it returns. */
static void *body_main(void *arg)
{
	struct body *b = arg;
	cli_entry_fn *entry = load(EXIT_SETUP);
	pthread_sigmask(SIG_SETMASK, &b->mask, NULL);
	exit(entry(b->argc, b->argv, &b->launch));
}

int main(int argc, char **argv)
{
	if (argc > 1 && streq(argv[1], "run")) {
		static struct sandbox sandbox;
		static struct body b;
		/* A failure is kept in the struct and told by `run` where it
		 * would have cloned, after its own checks. */
		(void)sandbox_clone(&sandbox, argc, argv);
		cloned = &sandbox;
		b = (struct body){ .argc = argc, .argv = argv, .launch.sandbox = &sandbox };
		/* Signals go to the command's thread, which handles them (the
		 * proxy passes them to the sandbox); this one only waits. */
		sigset_t all;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &b.mask);
		pthread_t body;
		if (pthread_create(&body, NULL, body_main, &b) == 0) {
			if (sandbox.pid > 0 && sandbox.warm_lock)
				sandbox_warm_take(); /* it will be moved into a cgroup by its PID */
			pthread_join(body, NULL);    /* never returns: body_main exits */
			return 1;
		}
		pthread_sigmask(SIG_SETMASK, &b.mask, NULL);
		cli_entry_fn *entry = load(EXIT_SETUP);
		return entry(argc, argv, &b.launch);
	}
	cli_entry_fn *entry = load(1);
	return entry(argc, argv, NULL);
}
