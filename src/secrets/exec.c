/* `from: exec:COMMAND` (exec.h).
 *
 * Trust: the command is the policy author's, and runs with keyward's
 * rights; its output is not trusted: any bytes, any length, malformed
 * JSON, a time in any shape. Verified here: the output's size (capped at
 * EXEC_OUTPUT_MAX, read into locked memory), its JSON shape, the time's
 * syntax; the value's bytes are checked by the caller
 * (secret_value_check). The command's stderr is never read: a command may
 * print the secret there. Messages quote neither output nor stderr. */
#include "secrets/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char **command_env;

void exec_set_environ(char **envp)
{
	command_env = envp;
}

int64_t exec_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool digits(const char *s, size_t n, int *ret)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

/* RFC 3339 section 5.6: full-date "T" full-time, where full-time is
 * HH:MM:SS[.frac](Z|+HH:MM|-HH:MM); "t", "z" and a space for "T" are
 * allowed by its notes. */
int exec_parse_time(const char *s, int64_t *ret_ms)
{
	int Y, M, D, h, m, sec, oh = 0, om = 0, ms = 0;
	size_t n = strlen(s), i = 19;

	if (n < 20 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) || s[7] != '-' ||
	    !digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2, &h) ||
	    s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' || !digits(s + 17, 2, &sec))
		return -EINVAL;
	if (s[i] == '.') {
		size_t start = ++i;
		int scale = 100;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			ms += (s[i] - '0') * scale;
			scale /= 10;
			i++;
		}
		if (i == start)
			return -EINVAL;
	}
	int sign = 0;
	if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
		sign = 0;
	} else if ((s[i] == '+' || s[i] == '-') && i + 6 == n && digits(s + i + 1, 2, &oh) && s[i + 3] == ':' &&
	           digits(s + i + 4, 2, &om)) {
		sign = s[i] == '+' ? 1 : -1;
	} else {
		return -EINVAL;
	}
	/* sec 60 is a leap second (RFC 3339 5.7); timegm folds it forward. */
	if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || oh > 23 || om > 59)
		return -EINVAL;
	struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec };
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != D)
		return -EINVAL; /* 2026-02-31 */
	t -= (time_t)sign * (oh * 3600 + om * 60);
	*ret_ms = (int64_t)t * 1000 + ms;
	return 0;
}

int64_t exec_refresh_at(int64_t now_ms, int64_t expires_ms)
{
	if (!expires_ms)
		return 0;
	int64_t early = (expires_ms - now_ms) / 10;
	if (early > 60000)
		early = 60000;
	if (early < 0)
		early = 0;
	return expires_ms - early;
}

/* jansson's memory is wiped when it is freed: the parse below holds a
 * copy of the secret (and the parser's scratch buffers hold pieces of it)
 * until json_decref. Set once for the process; jansson's other users in
 * keyward only pay a memset. */
static void json_wiping_free(void *p)
{
	if (p) {
		explicit_bzero(p, malloc_usable_size(p));
		free(p);
	}
}

static void set_json_allocator(void)
{
	json_set_alloc_funcs(malloc, json_wiping_free);
}

static void use_wiping_json_allocator(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, set_json_allocator);
}

static int parse_json(const char *out, size_t n, struct secret **ret, int64_t *ret_expires_ms, char *why, size_t whylen)
{
	json_error_t jerr;
	use_wiping_json_allocator();
	json_t *obj = json_loadb(out, n, JSON_REJECT_DUPLICATES, &jerr);
	int r = -EINVAL;

	if (!obj) {
		/* jerr.text may quote the output: give only the place. */
		snprintf(why, whylen, "output is not valid JSON (line %d, column %d)", jerr.line, jerr.column);
		return -EINVAL;
	}
	json_t *v = json_object_get(obj, "value"), *e = json_object_get(obj, "expires_at");
	int64_t expires = 0;
	if (!json_is_object(obj))
		snprintf(why, whylen, "output is JSON but not an object");
	else if (!json_is_string(v))
		snprintf(why, whylen, "output is a JSON object without a string \"value\"");
	else if (e && !json_is_null(e) && (!json_is_string(e) || exec_parse_time(json_string_value(e), &expires) < 0))
		snprintf(why, whylen, "\"expires_at\" of the output is not an RFC 3339 time");
	else
		r = secret_new(json_string_value(v), json_string_length(v), ret);
	if (r == 0)
		*ret_expires_ms = expires;
	json_decref(obj);
	return r;
}

int exec_output_parse(const char *out, size_t n, struct secret **ret, int64_t *ret_expires_ms, char *why, size_t whylen)
{
	size_t i = 0;
	while (i < n && (out[i] == ' ' || out[i] == '\t' || out[i] == '\n' || out[i] == '\r'))
		i++;
	if (i < n && out[i] == '{')
		return parse_json(out, n, ret, ret_expires_ms, why, whylen);
	if (n && out[n - 1] == '\n')
		n--;
	if (n && out[n - 1] == '\r')
		n--;
	int r = secret_new(out, n, ret);
	if (r == 0)
		*ret_expires_ms = 0;
	return r;
}

/* Starts /bin/sh -c command in its own process group, stdout on a pipe
 * whose read end goes to *ret_fd. */
static int spawn(const char *command, pid_t *ret_pid, int *ret_fd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	/* Nothing else of keyward's passes: while the proxy serves, its client
	 * and upstream sockets are open, and a command holding a copy could
	 * read or write plain-HTTP traffic, would keep a connection keyward
	 * closed open, and would keep a closed socket registered in a
	 * worker's epoll set (proxy.c, the change list). */
	int e = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	/* In "/": keyward's working directory is usually the workspace of
	 * `keyward run`, which the sandbox writes, and many commands load
	 * code from their working directory (python3 puts it first on
	 * sys.path, a relative PATH entry, ./script): the command must not
	 * run what the sandbox left there. */
	if (e == 0)
		e = posix_spawn_file_actions_addchdir_np(&fa, "/");
	posix_spawnattr_init(&at);
	/* Its own group, so that a timeout kills what it started too; signal
	 * dispositions reset (keyward ignores SIGPIPE) and none blocked. */
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	char *argv[] = { "sh", "-c", (char *)command, NULL };
	if (e == 0) /* not run at all if its descriptors could not be closed */
		e = posix_spawn(ret_pid, "/bin/sh", &fa, &at, argv, command_env ? command_env : environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (e != 0) {
		close(p[0]);
		return -e;
	}
	*ret_fd = p[0];
	return 0;
}

/* exec_abort: readable once keyward is stopping. Never read, so it stays
 * readable for every command still running. */
static int abort_fd = -1;
static atomic_bool aborted;
static pthread_once_t abort_once = PTHREAD_ONCE_INIT;

static void abort_fd_init(void)
{
	abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void exec_abort(void)
{
	pthread_once(&abort_once, abort_fd_init);
	atomic_store(&aborted, true);
	if (abort_fd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(abort_fd, &one, sizeof(one));
		(void)w; /* the flag alone still stops the next wait step */
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline)
{
	int64_t now = mono_ms();
	return deadline > now ? (int)(deadline - now) : 0;
}

/* Reads the command's stdout into buf until EOF, the cap or the deadline.
 * Returns the byte count, -EFBIG, -ETIMEDOUT or -ECANCELED (exec_abort). */
static ssize_t read_output(int fd, unsigned char *buf, size_t cap, int64_t deadline)
{
	size_t n = 0;
	for (;;) {
		struct pollfd pf[2] = { { .fd = fd, .events = POLLIN }, { .fd = abort_fd, .events = POLLIN } };
		int left = remaining_ms(deadline);
		if (left == 0)
			return -ETIMEDOUT;
		int r = poll(pf, 2, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return -ETIMEDOUT;
		if (atomic_load(&aborted))
			return -ECANCELED;
		ssize_t k = read(fd, buf + n, cap + 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return (ssize_t)n;
		n += (size_t)k;
		if (n > cap)
			return -EFBIG;
	}
}

/* Waits for pid until the deadline, then kills its group. Returns its
 * wait status, or -ETIMEDOUT. */
static int reap(pid_t pid, int64_t deadline, bool kill_now)
{
	int st;
	if (kill_now)
		kill(-pid, SIGKILL);
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -ECHILD;
		if (remaining_ms(deadline) == 0 || atomic_load(&aborted)) {
			kill(-pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		struct timespec pause = { 0, 5 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
}

int exec_fetch(const char *command, struct secret **ret, int64_t *ret_expires_ms, char *errbuf, size_t errlen)
{
	_cleanup_secret_ struct secret *buf = NULL;
	pid_t pid;
	int fd, r;
	char why[160];

	pthread_once(&abort_once, abort_fd_init);
	if (atomic_load(&aborted)) {
		snprintf(errbuf, errlen, "keyward is stopping");
		return -ECANCELED;
	}
	r = secret_alloc(EXEC_OUTPUT_MAX + 1, &buf);
	if (r < 0)
		return r;
	r = spawn(command, &pid, &fd);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot run /bin/sh: %s", strerror(-r));
		return r;
	}
	int64_t deadline = mono_ms() + EXEC_TIMEOUT_MS;
	ssize_t n = read_output(fd, buf->data, EXEC_OUTPUT_MAX, deadline);
	close(fd);
	int st = reap(pid, deadline, n < 0);
	if (n == -ECANCELED || atomic_load(&aborted)) {
		snprintf(errbuf, errlen, "keyward is stopping: the command was killed");
		return -ECANCELED;
	}
	if (n == -ETIMEDOUT || st == -ETIMEDOUT) {
		snprintf(errbuf, errlen, "the command did not finish within %d s and was killed",
		         EXEC_TIMEOUT_MS / 1000);
		return -ETIMEDOUT;
	}
	if (n == -EFBIG) {
		snprintf(errbuf, errlen, "the command wrote more than %d KiB and was killed", EXEC_OUTPUT_MAX / 1024);
		return -EFBIG;
	}
	if (st < 0) {
		snprintf(errbuf, errlen, "cannot wait for the command: %s", strerror(-st));
		return st;
	}
	if (WIFSIGNALED(st)) {
		snprintf(errbuf, errlen, "the command was killed by signal %d", WTERMSIG(st));
		return -EIO;
	}
	if (WEXITSTATUS(st) != 0) {
		snprintf(errbuf, errlen, "the command exited with status %d", WEXITSTATUS(st));
		return -EIO;
	}
	r = exec_output_parse((const char *)buf->data, (size_t)n, ret, ret_expires_ms, why, sizeof(why));
	if (r < 0)
		snprintf(errbuf, errlen, "%s", why);
	return r;
}
