/* Runs a check in a forked child. For tests of layers that cannot be undone
 * (seccomp, Landlock): the test process itself never applies them. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* In the child: reports a failed expectation on stderr and exits with 1. */
#define CHILD_CHECK(cond)                                                                                    \
	do {                                                                                                 \
		errno = 0;                                                                                   \
		if (!(cond)) {                                                                               \
			int e_ = errno;                                                                      \
			fprintf(stderr, "%s:%d: %s (errno: %s)\n", __FILE__, __LINE__, #cond, strerror(e_)); \
			_exit(1);                                                                            \
		}                                                                                            \
	} while (0)

/* Runs fn(arg) in a child, which must end with _exit(0) on success, and
 * returns its wait status (-1 if it could not be run). The child dumps no
 * core: a seccomp kill would otherwise leave one in the working directory. */
static inline int run_in_child(void (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		fn(arg);
		_exit(127); /* fn forgot to exit */
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

/* True when the child exited with status 0. */
static inline int child_passed(int status)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
