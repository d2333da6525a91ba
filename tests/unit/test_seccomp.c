/* seccomp: the sandbox's system-call filter, probed call by call from a
 * child that installs it (a filter cannot be removed). Each probe is chosen
 * so that, without the filter, it would fail with another errno or succeed
 * harmlessly: a refusal seen here is the filter's. */
#include <setjmp.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "child.h"
#include "common/util.h"
#include "sandbox/seccomp.h"

#define NOWHERE "/nonexistent/keyward-test"

/* Raw clone and clone3 with the given flags; a child that gets through
 * leaves at once. */
static long clone_with(unsigned long flags)
{
	long r = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	return r;
}

/* struct clone_args, version 0 (64 bytes), without <linux/sched.h>, whose
 * CLONE_* macros clash with glibc's. */
struct clone3_args {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static long probe_clone3(void)
{
	struct clone3_args args = { .flags = CLONE_NEWUSER, .exit_signal = SIGCHLD };
	long r = syscall(SYS_clone3, &args, sizeof(args));
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	return r;
}

/* fchmodat2 (Linux 6.6): the same number on every arch this builds for,
 * and missing from Debian 12's headers. */
#define NR_FCHMODAT2 452L

/* struct open_how, without <linux/openat2.h>. */
struct open_how_v0 {
	uint64_t flags, mode, resolve;
};

static long probe_openat2(void)
{
	struct open_how_v0 how = { .flags = O_CREAT | O_WRONLY, .mode = 04755 };
	return syscall(SYS_openat2, AT_FDCWD, NOWHERE, &how, sizeof(how));
}

/* clang-format off */
static long probe_ptrace(void) { return ptrace(PTRACE_TRACEME, 0, NULL, NULL); }
static long probe_vm_readv(void) { return process_vm_readv(getppid(), NULL, 0, NULL, 0, 0); }
static long probe_keyctl(void) { return syscall(SYS_keyctl, -1L, 0, 0, 0, 0); }
static long probe_add_key(void) { return syscall(SYS_add_key, NULL, NULL, NULL, 0, 0); }
static long probe_bpf(void) { return syscall(SYS_bpf, -1, NULL, 0); }
static long probe_perf(void) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
static long probe_userfaultfd(void) { return syscall(SYS_userfaultfd, -1); }
static long probe_io_uring(void) { return syscall(SYS_io_uring_setup, 0, NULL); }
static long probe_mount(void) { return mount("none", NOWHERE, "tmpfs", 0, NULL); }
static long probe_umount(void) { return umount2(NOWHERE, 0); }
static long probe_fsopen(void) { return syscall(SYS_fsopen, "keyward-none", 0); }
static long probe_open_tree(void) { return syscall(SYS_open_tree, -1, NOWHERE, 0); }
static long probe_pivot_root(void) { return syscall(SYS_pivot_root, NOWHERE, NOWHERE); }
static long probe_chroot(void) { return chroot(NOWHERE); }
static long probe_unshare(void) { return unshare(CLONE_NEWUSER); }
static long probe_setns(void) { return setns(-1, 0); }
static long probe_clone_newnet(void) { return clone_with(CLONE_NEWNET); }
static long probe_clone_newuser(void) { return clone_with(CLONE_NEWUSER); }
/* The kernel reads only the low 32 bits of clone's flags. */
static long probe_clone_high_bits(void) { return clone_with(1UL << 32 | CLONE_NEWNS); }
static long probe_handle_at(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }
static long probe_init_module(void) { return syscall(SYS_init_module, NULL, 0, ""); }
static long probe_reboot(void) { return syscall(SYS_reboot, 0, 0, 0, NULL); }
static long probe_settimeofday(void) { return syscall(SYS_settimeofday, NULL, NULL); }
static long probe_syslog(void) { return syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0); }
static long probe_iopl(void) { return syscall(SYS_iopl, 0); }
/* fd -1: the filter answers before the kernel looks at the fd, and without
 * it the kernel would answer EBADF, never inject anything. */
static long probe_tiocsti(void) { return ioctl(-1, TIOCSTI, "x"); }
static long probe_tiocsti_high(void) { return syscall(SYS_ioctl, -1, 1UL << 32 | TIOCSTI, "x"); }
static long probe_tioclinux(void) { return ioctl(-1, TIOCLINUX, "\x06"); }
static long probe_tcgets(void) { char t[64]; return ioctl(-1, TCGETS, t); }
static long probe_netlink(void) { return socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE); }
static long probe_packet(void) { return socket(AF_PACKET, SOCK_RAW, 0); }
static long probe_vsock(void) { return socket(AF_VSOCK, SOCK_STREAM, 0); }
static long probe_family_high(void) { return syscall(SYS_socket, 1UL << 32 | AF_NETLINK, SOCK_RAW, 0); }
static long probe_pair_netlink(void) { int sv[2]; return socketpair(AF_NETLINK, SOCK_RAW, 0, sv); }
static long probe_raw4(void) { return socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); }
static long probe_raw4_flags(void) { return socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW); }
static long probe_raw6(void) { return socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6); }
static long probe_packet4(void) { return socket(AF_INET, SOCK_PACKET, 0); }
static long probe_raw4_high(void) { return syscall(SYS_socket, 1UL << 32 | AF_INET, 1UL << 32 | SOCK_RAW, IPPROTO_ICMP); }
static long probe_pair_raw4(void) { int sv[2]; return socketpair(AF_INET, SOCK_RAW, 0, sv); }
static long probe_per_bsd(void) { return personality(PER_BSD); }
static long probe_per_no_aslr(void) { return personality(ADDR_NO_RANDOMIZE); }
static long probe_per_rie(void) { return personality(READ_IMPLIES_EXEC); }
static long probe_per_high(void) { return syscall(SYS_personality, 1UL << 32 | PER_BSD); }
static long probe_getpid(void) { return getpid(); }
static long probe_tcp(void) { return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }
static long probe_udp6(void) { return socket(AF_INET6, SOCK_DGRAM, 0); }
static long probe_unix(void) { return socket(AF_UNIX, SOCK_STREAM, 0); }
static long probe_pair_unix(void) { int sv[2]; return socketpair(AF_UNIX, SOCK_STREAM, 0, sv); }
static long probe_per_query(void) { return personality(0xffffffff); }
static long probe_per_query_64(void) { return syscall(SYS_personality, ~0UL); }
static long probe_per_linux(void) { return personality(PER_LINUX); }
static long probe_per_linux32(void) { return personality(PER_LINUX32); }
/* Set-uid and set-gid modes on a path that does not exist, or on fd -1:
 * without the filter each answers ENOENT or EBADF, creating nothing. */
static long probe_chmod_suid(void) { return chmod(NOWHERE, 04755); }
static long probe_chmod_sgid(void) { return chmod(NOWHERE, 02755); }
static long probe_chmod_high(void) { return syscall(SYS_chmod, NOWHERE, 1UL << 32 | 04755); }
static long probe_fchmod_suid(void) { return fchmod(-1, 04755); }
static long probe_fchmod_sgid(void) { return fchmod(-1, 02700); }
static long probe_fchmodat_suid(void) { return syscall(SYS_fchmodat, AT_FDCWD, NOWHERE, 06755); }
static long probe_fchmodat2_sgid(void) { return syscall(NR_FCHMODAT2, AT_FDCWD, NOWHERE, 02755, 0); }
static long probe_fchmodat2_suid(void) { return syscall(NR_FCHMODAT2, AT_FDCWD, NOWHERE, 04755, AT_SYMLINK_NOFOLLOW); }
static long probe_open_creat_suid(void) { return syscall(SYS_open, NOWHERE, O_CREAT | O_WRONLY, 04755); }
static long probe_open_tmpfile_sgid(void) { return syscall(SYS_open, NOWHERE, O_TMPFILE | O_WRONLY, 02755); }
static long probe_openat_creat_sgid(void) { return openat(AT_FDCWD, NOWHERE, O_CREAT | O_EXCL | O_WRONLY, 02644); }
static long probe_openat_tmpfile_suid(void) { return openat(AT_FDCWD, NOWHERE, O_TMPFILE | O_RDWR, 04700); }
static long probe_openat_high(void) { return syscall(SYS_openat, AT_FDCWD, NOWHERE, 1UL << 32 | O_CREAT | O_WRONLY, 1UL << 32 | 04755); }
static long probe_creat_suid(void) { return creat(NOWHERE, 04755); }
static long probe_mknod_suid(void) { return syscall(SYS_mknod, NOWHERE, S_IFREG | 04755, 0); }
static long probe_mknodat_sgid(void) { return mknodat(AT_FDCWD, NOWHERE, S_IFREG | 02755, 0); }
/* The same calls without those bits, and opens that create nothing whose
 * mode argument holds them (it is garbage then): they reach the kernel. */
static long probe_chmod_plain(void) { return chmod(NOWHERE, 01777); }
static long probe_chmod_plain_high(void) { return syscall(SYS_chmod, NOWHERE, 1UL << 32 | 0755); }
static long probe_fchmod_plain(void) { return fchmod(-1, 0644); }
static long probe_fchmodat2_plain(void) { return syscall(NR_FCHMODAT2, AT_FDCWD, NOWHERE, 0755, 0); }
static long probe_open_rdonly_suid(void) { return syscall(SYS_open, NOWHERE, O_RDONLY, 06755); }
static long probe_openat_dir_suid(void) { return openat(AT_FDCWD, NOWHERE, O_RDONLY | O_DIRECTORY, 04755); }
static long probe_openat_creat_plain(void) { return openat(AT_FDCWD, NOWHERE, O_CREAT | O_WRONLY, 0755); }
static long probe_mknod_plain(void) { return mknodat(AT_FDCWD, NOWHERE, S_IFREG | 0644, 0); }
static long probe_mkdir_sgid(void) { return mkdir(NOWHERE, 02755); }
/* clang-format on */

static long probe_fork(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return -1;
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void *thread_main(void *arg)
{
	return arg;
}

/* glibc tries clone3 first and falls back to clone on ENOSYS. */
static long probe_thread(void)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, thread_main, NULL);
	if (r != 0) {
		errno = r;
		return -1;
	}
	return pthread_join(t, NULL) == 0 ? 0 : -1;
}

#if defined(__x86_64__)
/* getpid through the x32 entry point: same audit arch as x86_64, number
 * with bit 30 set. This kernel may have no x32 at all (it would answer
 * ENOSYS); the filter must kill before the kernel looks. */
static long probe_x32(void)
{
	long r = syscall(0x40000000L /* __X32_SYSCALL_BIT */ | SYS_getpid);
	return r == getpid() ? r : -1;
}

/* getpid (20 on i386) through the 32-bit int 0x80 entry point. */
static long probe_int80(void)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
	return r;
}
#endif

struct probe {
	const char *what;
	long (*call)(void);
	int want_errno;  /* 0: the call must succeed */
	int want_signal; /* the call must kill the process with this signal */
};

static const struct probe probes[] = {
	/* refused outright */
	{ "ptrace(PTRACE_TRACEME)", probe_ptrace, EPERM, 0 },
	{ "process_vm_readv", probe_vm_readv, EPERM, 0 },
	{ "keyctl", probe_keyctl, EPERM, 0 },
	{ "add_key", probe_add_key, EPERM, 0 },
	{ "bpf", probe_bpf, EPERM, 0 },
	{ "perf_event_open", probe_perf, EPERM, 0 },
	{ "userfaultfd", probe_userfaultfd, EPERM, 0 },
	{ "io_uring_setup", probe_io_uring, EPERM, 0 },
	{ "mount", probe_mount, EPERM, 0 },
	{ "umount2", probe_umount, EPERM, 0 },
	{ "fsopen", probe_fsopen, EPERM, 0 },
	{ "open_tree", probe_open_tree, EPERM, 0 },
	{ "pivot_root", probe_pivot_root, EPERM, 0 },
	{ "chroot", probe_chroot, EPERM, 0 },
	{ "unshare(CLONE_NEWUSER)", probe_unshare, EPERM, 0 },
	{ "setns", probe_setns, EPERM, 0 },
	{ "open_by_handle_at", probe_handle_at, EPERM, 0 },
	{ "init_module", probe_init_module, EPERM, 0 },
	{ "reboot", probe_reboot, EPERM, 0 },
	{ "settimeofday", probe_settimeofday, EPERM, 0 },
	{ "syslog", probe_syslog, EPERM, 0 },
#if defined(__x86_64__)
	{ "iopl", probe_iopl, EPERM, 0 },
#endif
	/* refused for their arguments */
	{ "clone(CLONE_NEWNET)", probe_clone_newnet, EPERM, 0 },
	{ "clone(CLONE_NEWUSER)", probe_clone_newuser, EPERM, 0 },
	{ "clone(1<<32 | CLONE_NEWNS)", probe_clone_high_bits, EPERM, 0 },
	{ "clone3", probe_clone3, ENOSYS, 0 },
	{ "ioctl(TIOCSTI)", probe_tiocsti, EPERM, 0 },
	{ "ioctl(1<<32 | TIOCSTI)", probe_tiocsti_high, EPERM, 0 },
	{ "ioctl(TIOCLINUX)", probe_tioclinux, EPERM, 0 },
	{ "socket(AF_NETLINK)", probe_netlink, EAFNOSUPPORT, 0 },
	{ "socket(AF_PACKET)", probe_packet, EAFNOSUPPORT, 0 },
	{ "socket(AF_VSOCK)", probe_vsock, EAFNOSUPPORT, 0 },
	{ "socket(1<<32 | AF_NETLINK)", probe_family_high, EAFNOSUPPORT, 0 },
	{ "socketpair(AF_NETLINK)", probe_pair_netlink, EAFNOSUPPORT, 0 },
	{ "socket(AF_INET, SOCK_RAW)", probe_raw4, EPERM, 0 },
	{ "socket(AF_INET, SOCK_RAW|SOCK_NONBLOCK|SOCK_CLOEXEC)", probe_raw4_flags, EPERM, 0 },
	{ "socket(AF_INET6, SOCK_RAW)", probe_raw6, EPERM, 0 },
	{ "socket(AF_INET, SOCK_PACKET)", probe_packet4, EPERM, 0 },
	{ "socket(1<<32 | AF_INET, 1<<32 | SOCK_RAW)", probe_raw4_high, EPERM, 0 },
	{ "socketpair(AF_INET, SOCK_RAW)", probe_pair_raw4, EPERM, 0 },
	{ "personality(PER_BSD)", probe_per_bsd, EPERM, 0 },
	{ "personality(ADDR_NO_RANDOMIZE)", probe_per_no_aslr, EPERM, 0 },
	{ "personality(READ_IMPLIES_EXEC)", probe_per_rie, EPERM, 0 },
	{ "personality(1<<32 | PER_BSD)", probe_per_high, EPERM, 0 },
	{ "chmod(04755)", probe_chmod_suid, EPERM, 0 },
	{ "chmod(02755)", probe_chmod_sgid, EPERM, 0 },
	{ "chmod(1<<32 | 04755)", probe_chmod_high, EPERM, 0 },
	{ "fchmod(04755)", probe_fchmod_suid, EPERM, 0 },
	{ "fchmod(02700)", probe_fchmod_sgid, EPERM, 0 },
	{ "fchmodat(06755)", probe_fchmodat_suid, EPERM, 0 },
	{ "fchmodat2(02755)", probe_fchmodat2_sgid, EPERM, 0 },
	{ "fchmodat2(04755, AT_SYMLINK_NOFOLLOW)", probe_fchmodat2_suid, EPERM, 0 },
	{ "open(O_CREAT, 04755)", probe_open_creat_suid, EPERM, 0 },
	{ "open(O_TMPFILE, 02755)", probe_open_tmpfile_sgid, EPERM, 0 },
	{ "openat(O_CREAT|O_EXCL, 02644)", probe_openat_creat_sgid, EPERM, 0 },
	{ "openat(O_TMPFILE, 04700)", probe_openat_tmpfile_suid, EPERM, 0 },
	{ "openat(1<<32 | O_CREAT, 1<<32 | 04755)", probe_openat_high, EPERM, 0 },
	{ "creat(04755)", probe_creat_suid, EPERM, 0 },
	{ "mknod(S_IFREG | 04755)", probe_mknod_suid, EPERM, 0 },
	{ "mknodat(S_IFREG | 02755)", probe_mknodat_sgid, EPERM, 0 },
	{ "openat2", probe_openat2, ENOSYS, 0 },
#if defined(__x86_64__)
	/* other ABIs: the process is killed */
	{ "x32 getpid", probe_x32, 0, SIGSYS },
	{ "int 0x80 getpid", probe_int80, 0, SIGSYS },
#endif
	/* allowed */
	{ "getpid", probe_getpid, 0, 0 },
	{ "fork", probe_fork, 0, 0 },
	{ "pthread_create", probe_thread, 0, 0 },
	{ "ioctl(TCGETS) reaches the kernel", probe_tcgets, EBADF, 0 },
	{ "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC)", probe_tcp, 0, 0 },
	{ "socket(AF_INET6, SOCK_DGRAM)", probe_udp6, 0, 0 },
	{ "socket(AF_UNIX)", probe_unix, 0, 0 },
	{ "socketpair(AF_UNIX)", probe_pair_unix, 0, 0 },
	{ "personality(0xffffffff)", probe_per_query, 0, 0 },
	{ "personality(~0UL)", probe_per_query_64, 0, 0 },
	{ "personality(PER_LINUX)", probe_per_linux, 0, 0 },
	{ "personality(PER_LINUX32)", probe_per_linux32, 0, 0 },
	{ "chmod(01777) reaches the kernel", probe_chmod_plain, ENOENT, 0 },
	{ "chmod(1<<32 | 0755) reaches the kernel", probe_chmod_plain_high, ENOENT, 0 },
	{ "fchmod(0644) reaches the kernel", probe_fchmod_plain, EBADF, 0 },
	{ "fchmodat2(0755) reaches the kernel", probe_fchmodat2_plain, ENOENT, 0 },
	{ "open(O_RDONLY, 06755) reaches the kernel", probe_open_rdonly_suid, ENOENT, 0 },
	{ "openat(O_DIRECTORY, 04755) reaches the kernel", probe_openat_dir_suid, ENOENT, 0 },
	{ "openat(O_CREAT, 0755) reaches the kernel", probe_openat_creat_plain, ENOENT, 0 },
	{ "mknodat(S_IFREG | 0644) reaches the kernel", probe_mknod_plain, ENOENT, 0 },
	{ "mkdir(02755) reaches the kernel", probe_mkdir_sgid, ENOENT, 0 },
};

/* In the child: install the filter, make the call, exit 0 if it behaved. */
static void run_probe(void *arg)
{
	const struct probe *p = arg;
	char err[256] = "";
	if (sandbox_seccomp_install(err, sizeof(err)) < 0) {
		fprintf(stderr, "install: %s\n", err);
		_exit(2);
	}
	errno = 0;
	long r = p->call();
	int e = errno;
	if (p->want_signal)
		fprintf(stderr, "%s: returned %ld (%s) instead of being killed\n", p->what, r, strerror(e));
	else if (p->want_errno == 0 && r >= 0)
		_exit(0);
	else if (p->want_errno != 0 && r == -1 && e == p->want_errno)
		_exit(0);
	else
		fprintf(stderr, "%s: returned %ld (%s), want %s\n", p->what, r, strerror(e),
		        p->want_errno ? strerror(p->want_errno) : "success");
	_exit(1);
}

static void test_probes(void **state)
{
	size_t failed = 0;
	for (size_t i = 0; i < ARRAY_SIZE(probes); i++) {
		const struct probe *p = &probes[i];
		int status = run_in_child(run_probe, (void *)p);
		bool ok = p->want_signal ? status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == p->want_signal
		                         : child_passed(status);
		if (!ok) {
			print_error("%s: wait status %#x\n", p->what, (unsigned)status);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* errbuf may be NULL; the filter still installs. */
static void install_without_errbuf(void *arg)
{
	CHILD_CHECK(sandbox_seccomp_install(NULL, 0) == 0);
	CHILD_CHECK(unshare(CLONE_NEWNS) == -1 && errno == EPERM);
	_exit(0);
}

static void test_install_without_errbuf(void **state)
{
	assert_true(child_passed(run_in_child(install_without_errbuf, NULL)));
}

/* A filtered process may add a filter of its own (it can only narrow),
 * and the second install still refuses what the first did. */
static void install_twice(void *arg)
{
	char err[256];
	CHILD_CHECK(sandbox_seccomp_install(err, sizeof(err)) == 0);
	CHILD_CHECK(sandbox_seccomp_install(err, sizeof(err)) == 0);
	CHILD_CHECK(socket(AF_NETLINK, SOCK_RAW, 0) == -1 && errno == EAFNOSUPPORT);
	CHILD_CHECK(personality(0xffffffff) != -1);
	_exit(0);
}

static void test_install_twice(void **state)
{
	assert_true(child_passed(run_in_child(install_twice, NULL)));
}

int main(void)
{
	/* valgrind runs the program on a synthetic CPU and makes its own system
	 * calls, which this filter refuses: skipped under `make test-valgrind`
	 * (77: meson's "skipped"). */
	if (getenv("KEYWARD_VALGRIND")) {
		printf("skipped: seccomp filters cannot be tested under valgrind\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probes),
		cmocka_unit_test(test_install_without_errbuf),
		cmocka_unit_test(test_install_twice),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
