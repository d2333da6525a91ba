/* seccomp: the system-call filters installed just before the sandbox runs
 * its command.
 *
 * Two filters, stacked; the kernel runs both and keeps the strictest
 * answer, so each only has to refuse:
 * - the deny list (what it refuses and why: seccomp_gen.c), built from its
 *   rules by libseccomp at build time and installed here as it is;
 * - two allow-lists (personality, socket families), hand-written below:
 *   libseccomp cannot say "refuse unless the argument is one of these
 *   values" (a rule may test an argument only once, and a rule may not have
 *   the default action). */
#include "sandbox/seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The low 32 bits of syscall argument n in struct seccomp_data, where the
 * kernel reads an int argument from. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LOW32(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#else
#define ARG_LOW32(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#endif

/* The allow-list filter, one instruction per position; jumps are written
 * as the target's position and turned into BPF's relative offsets. */
enum {
	AT_LOAD_ARCH,
	AT_IS_NATIVE,
	AT_LOAD_NR,
	AT_IS_PERSONALITY,
	AT_LOAD_PERSONA,
	AT_PER_LINUX,
	AT_PER_LINUX32,
	AT_PER_QUERY,
	AT_REFUSE_PERSONA,
	AT_IS_SOCKET,
	AT_IS_SOCKETPAIR,
	AT_LOAD_FAMILY,
	AT_AF_UNIX,
	AT_AF_INET,
	AT_AF_INET6,
	AT_REFUSE_FAMILY,
	AT_ALLOW,
	AT_KILL,
	ALLOW_LIST_LEN
};

#define LOAD(offset)          BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (offset))
#define RET(action)           BPF_STMT(BPF_RET | BPF_K, (action))
#define GOTO(from, to)        ((to) - (from)-1)
#define IF_EQ(at, k, yes, no) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (k), GOTO(at, yes), GOTO(at, no))
#define RET_ERRNO(e)          RET(SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

static int install_allow_lists(uint32_t native_arch, char *errbuf, size_t errlen)
{
	struct sock_filter insns[ALLOW_LIST_LEN] = {
		[AT_LOAD_ARCH] = LOAD(offsetof(struct seccomp_data, arch)),
		[AT_IS_NATIVE] = IF_EQ(AT_IS_NATIVE, native_arch, AT_LOAD_NR, AT_KILL),
		[AT_LOAD_NR] = LOAD(offsetof(struct seccomp_data, nr)),
		[AT_IS_PERSONALITY] = IF_EQ(AT_IS_PERSONALITY, __NR_personality, AT_LOAD_PERSONA, AT_IS_SOCKET),
		/* personality takes an unsigned int */
		[AT_LOAD_PERSONA] = LOAD(ARG_LOW32(0)),
		[AT_PER_LINUX] = IF_EQ(AT_PER_LINUX, PER_LINUX, AT_ALLOW, AT_PER_LINUX32),
		[AT_PER_LINUX32] = IF_EQ(AT_PER_LINUX32, PER_LINUX32, AT_ALLOW, AT_PER_QUERY),
		[AT_PER_QUERY] = IF_EQ(AT_PER_QUERY, 0xffffffffu, AT_ALLOW, AT_REFUSE_PERSONA),
		[AT_REFUSE_PERSONA] = RET_ERRNO(EPERM),
		[AT_IS_SOCKET] = IF_EQ(AT_IS_SOCKET, __NR_socket, AT_LOAD_FAMILY, AT_IS_SOCKETPAIR),
		[AT_IS_SOCKETPAIR] = IF_EQ(AT_IS_SOCKETPAIR, __NR_socketpair, AT_LOAD_FAMILY, AT_ALLOW),
		/* socket and socketpair take an int family */
		[AT_LOAD_FAMILY] = LOAD(ARG_LOW32(0)),
		[AT_AF_UNIX] = IF_EQ(AT_AF_UNIX, AF_UNIX, AT_ALLOW, AT_AF_INET),
		[AT_AF_INET] = IF_EQ(AT_AF_INET, AF_INET, AT_ALLOW, AT_AF_INET6),
		[AT_AF_INET6] = IF_EQ(AT_AF_INET6, AF_INET6, AT_ALLOW, AT_REFUSE_FAMILY),
		[AT_REFUSE_FAMILY] = RET_ERRNO(EAFNOSUPPORT),
		[AT_ALLOW] = RET(SECCOMP_RET_ALLOW),
		/* Other arches are killed by the libseccomp filter too; x32
		 * numbers pass here and are killed there. */
		[AT_KILL] = RET(SECCOMP_RET_KILL_PROCESS),
	};
	struct sock_fprog prog = { .len = ALLOW_LIST_LEN, .filter = insns };

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
		int r = -errno;
		snprintf(errbuf, errlen, "seccomp: cannot load the allow-list filter: %s", strerror(-r));
		return r;
	}
	return 0;
}

int sandbox_seccomp_install(char *errbuf, size_t errlen)
{
	/* Required for an unprivileged process to load a filter, and keeps
	 * set-uid binaries from running with more rights under it. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		int r = -errno;
		snprintf(errbuf, errlen, "seccomp: cannot set no_new_privs: %s", strerror(-r));
		return r;
	}
	struct sock_fprog deny = { .len = (unsigned short)seccomp_deny_filter_len,
		                   .filter = (struct sock_filter *)seccomp_deny_filter };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &deny) < 0) {
		int r = -errno;
		snprintf(errbuf, errlen, "seccomp: cannot load the filter: %s", strerror(-r));
		return r;
	}
	return install_allow_lists(seccomp_native_arch, errbuf, errlen);
}
