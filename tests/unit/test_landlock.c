/* landlock: the sandbox's file-system, TCP and scope rules, checked from a
 * child that applies them (a Landlock domain cannot be left). Skipped on a
 * kernel without Landlock; the checks of later ABIs are skipped on older
 * ones. The tests run as root: Landlock binds root too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "child.h"
#include "common/util.h"
#include "sandbox/landlock.h"

static char root[PATH_MAX]; /* a fresh temporary directory per run */

static void path_in(char *out, size_t len, const char *rel)
{
	snprintf(out, len, "%s/%s", root, rel);
}

static void write_file(const char *rel)
{
	char p[PATH_MAX];
	path_in(p, sizeof(p), rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keyward\n", 8), 8);
	close(fd);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%s/keyward-landlock-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root))
		return -1;
	static const char *const dirs[] = { "ro", "rw", "outside" };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char p[PATH_MAX];
		path_in(p, sizeof(p), dirs[i]);
		if (mkdir(p, 0755) < 0)
			return -1;
	}
	write_file("ro/f");
	write_file("outside/f");
	write_file("outside/granted");
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	return nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int open_in(const char *rel, int flags)
{
	char p[PATH_MAX];
	path_in(p, sizeof(p), rel);
	return open(p, flags | O_CLOEXEC, 0600);
}

/* In the child: applies ll and checks the ABI it reports. */
static void apply_or_exit(struct sandbox_landlock *ll)
{
	char err[256] = "";
	if (sandbox_landlock_apply(ll, err, sizeof(err)) < 0) {
		fprintf(stderr, "apply: %s\n", err);
		_exit(2);
	}
	int kernel = sandbox_landlock_abi();
	CHILD_CHECK(ll->abi == (kernel < 7 ? kernel : 7));
	CHILD_CHECK(ll->abi < 6 || ll->missing[0] == '\0');
	CHILD_CHECK(ll->abi >= 4 || strstr(ll->missing, "TCP port rules (needs ABI 4)"));
}

static void skip_unless_abi(int abi)
{
	if (sandbox_landlock_abi() < abi)
		skip();
}

/* Rules the function cannot use are refused before anything is applied. */
static void bad_rules(void *arg)
{
	char err[256] = "";
	struct sandbox_path_rule no_path[] = { { NULL, SANDBOX_READ } };
	struct sandbox_landlock ll = { .paths = no_path, .n_paths = 1 };
	CHILD_CHECK(sandbox_landlock_apply(&ll, err, sizeof(err)) == -EINVAL);
	CHILD_CHECK(strstr(err, "no path") != NULL);

	char ro[PATH_MAX];
	path_in(ro, sizeof(ro), "ro");
	struct sandbox_path_rule bad_access[] = { { ro, (enum sandbox_access)7 } };
	ll = (struct sandbox_landlock){ .paths = bad_access, .n_paths = 1 };
	CHILD_CHECK(sandbox_landlock_apply(&ll, err, sizeof(err)) == -EINVAL);
	CHILD_CHECK(strstr(err, "unknown access") != NULL);
	CHILD_CHECK(ll.abi == 0); /* out-parameters untouched on failure */

	/* nothing was applied: the rest of the tree is still there */
	int fd = open_in("outside/f", O_RDONLY);
	CHILD_CHECK(fd >= 0);
	_exit(0);
}

static void test_bad_rules(void **state)
{
	skip_unless_abi(1);
	assert_true(child_passed(run_in_child(bad_rules, NULL)));
}

static void file_system(void *arg)
{
	char ro[PATH_MAX], rw[PATH_MAX], granted[PATH_MAX], gone[PATH_MAX];
	path_in(ro, sizeof(ro), "ro");
	path_in(rw, sizeof(rw), "rw");
	path_in(granted, sizeof(granted), "outside/granted"); /* a file: no directory rights */
	path_in(gone, sizeof(gone), "does-not-exist");
	const struct sandbox_path_rule paths[] = {
		{ ro, SANDBOX_READ },
		{ rw, SANDBOX_WRITE },
		{ granted, SANDBOX_WRITE },
		{ gone, SANDBOX_READ },
	};
	struct sandbox_landlock ll = { .paths = paths, .n_paths = ARRAY_SIZE(paths) };
	apply_or_exit(&ll);

	/* refused */
	CHILD_CHECK(open_in("ro/f", O_WRONLY) == -1 && errno == EACCES);
	CHILD_CHECK(open_in("ro/new", O_WRONLY | O_CREAT) == -1 && errno == EACCES);
	CHILD_CHECK(open_in("outside/f", O_RDONLY) == -1 && errno == EACCES);
	CHILD_CHECK(open_in("outside", O_RDONLY | O_DIRECTORY) == -1 && errno == EACCES);
	CHILD_CHECK(open_in("outside/new", O_WRONLY | O_CREAT) == -1 && errno == EACCES);
	if (ll.abi >= 3) {
		char f[PATH_MAX];
		path_in(f, sizeof(f), "ro/f");
		CHILD_CHECK(truncate(f, 0) == -1 && errno == EACCES);
	}

	/* allowed */
	char buf[16];
	int fd = open_in("ro/f", O_RDONLY);
	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(read(fd, buf, sizeof(buf)) == 8);
	fd = open_in("ro", O_RDONLY | O_DIRECTORY);
	CHILD_CHECK(fd >= 0);
	fd = open_in("rw/new", O_WRONLY | O_CREAT | O_EXCL);
	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(write(fd, "x", 1) == 1);
	fd = open_in("outside/granted", O_WRONLY | O_TRUNC);
	CHILD_CHECK(fd >= 0);
	_exit(0);
}

static void test_file_system(void **state)
{
	skip_unless_abi(1);
	assert_true(child_passed(run_in_child(file_system, NULL)));
}

/* A listening TCP socket on 127.0.0.1 with a port the kernel picks. */
static int listen_loopback(uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static int tcp_to(uint16_t port, bool do_bind)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		                   .sin_port = htons(port),
		                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	return do_bind ? bind(fd, (struct sockaddr *)&sin, sizeof(sin))
	               : connect(fd, (struct sockaddr *)&sin, sizeof(sin));
}

struct ports {
	uint16_t allowed, other;
};

static void tcp_ports(void *arg)
{
	const struct ports *p = arg;
	struct sandbox_landlock ll = { .tcp_ports = &p->allowed, .n_tcp_ports = 1 };
	apply_or_exit(&ll);
	/* refused: Landlock answers before the port is looked at, so binding
	 * the listener's (taken) port is EACCES, not EADDRINUSE */
	CHILD_CHECK(tcp_to(p->other, false) == -1 && errno == EACCES);
	CHILD_CHECK(tcp_to(p->other, true) == -1 && errno == EACCES);
	/* allowed */
	CHILD_CHECK(tcp_to(p->allowed, false) == 0);
	_exit(0);
}

static void test_tcp_ports(void **state)
{
	skip_unless_abi(4);
	struct ports p;
	int allowed = listen_loopback(&p.allowed);
	int other = listen_loopback(&p.other);
	bool passed = child_passed(run_in_child(tcp_ports, &p));
	close(allowed);
	close(other);
	assert_true(passed);
}

static void scopes(void *arg)
{
	const struct sockaddr_un *abstract = arg;
	struct sandbox_landlock ll = { 0 };
	apply_or_exit(&ll);
	/* refused: the parent is outside the domain */
	CHILD_CHECK(kill(getppid(), 0) == -1 && errno == EPERM);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(connect(fd, (const struct sockaddr *)abstract, sizeof(*abstract)) == -1 && errno == EPERM);
	/* allowed: itself */
	CHILD_CHECK(kill(getpid(), 0) == 0);
	_exit(0);
}

static void test_scopes(void **state)
{
	skip_unless_abi(6);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "keyward-test-%d", (int)getpid());
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 4), 0);
	bool passed = child_passed(run_in_child(scopes, &sun));
	close(fd);
	assert_true(passed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_rules),
		cmocka_unit_test(test_file_system),
		cmocka_unit_test(test_tcp_ports),
		cmocka_unit_test(test_scopes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
