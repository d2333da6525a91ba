/* seccomp: the system-call filter installed just before the sandbox runs its
 * command.
 *
 * Trust boundary: everything that runs after sandbox_seccomp_install()
 * returns is untrusted code (an agent, its tools, their dependencies), and so
 * is every process it starts; the filter is inherited across fork and execve
 * and cannot be removed. The namespaces are the first wall (own user, mount,
 * PID and network namespaces; the network one holds only `lo`). This filter
 * is the second: it refuses the calls that let code leave those namespaces,
 * reach other processes or secrets, change machine-wide state, or attack
 * large kernel surfaces that no build, test or agent needs. It is a deny
 * list: whatever is not named here is allowed.
 *
 * The groups, and why each is refused:
 * - Other processes' memory: ptrace, process_vm_readv/writev, pidfd_getfd.
 *   A tracer could read the memory of a process that holds a placeholder
 *   swap in flight, or steer a process started outside the filter.
 * - Kernel keyrings: keyctl, add_key, request_key. Keyrings are not
 *   namespaced (a user's keyring may hold a real credential) and the
 *   keyring code has a long record of kernel bugs.
 * - Kernel attack surface: bpf, perf_event_open, userfaultfd (turns kernel
 *   races into reliable exploits), io_uring_* (its operations are not
 *   system calls: socket, connect or openat through io_uring would pass
 *   this filter unseen), fanotify_init.
 * - The sandbox's own shape: mount and the new mount API (move_mount,
 *   open_tree, fsopen, fsconfig, fsmount, fspick, mount_setattr), umount2,
 *   pivot_root, chroot, unshare, setns, and clone with any CLONE_NEW* flag:
 *   a nested user namespace hands out a full capability set against a fresh
 *   slice of the kernel. clone3 keeps its flags in memory a filter cannot
 *   read, so it answers ENOSYS and glibc falls back to clone. open_by_handle_at
 *   and name_to_handle_at open files by inode, around every path check (the
 *   "shocker" container escape).
 * - Machine-wide state: kexec_load, kexec_file_load, init_module,
 *   finit_module, delete_module, acct, swapon, swapoff, reboot, the clocks
 *   (settimeofday, clock_settime, clock_adjtime, adjtimex), syslog,
 *   quotactl, quotactl_fd, iopl, ioperm, vhangup, and the obsolete uselib,
 *   lookup_dcookie and nfsservctl.
 * - Terminal injection: ioctl TIOCSTI pushes keystrokes into the terminal
 *   the sandbox shares with the user's shell, to be run after the sandbox
 *   exits (CVE-2017-5226 in bubblewrap); TIOCLINUX can do the same on a
 *   virtual console. The kernel reads the request as an unsigned int, so
 *   only its low 32 bits are compared (CVE-2019-10063 in flatpak).
 * - Sockets: only AF_UNIX, AF_INET and AF_INET6. Netlink, packet, vsock and
 *   the rest are old, rarely audited code, and vsock leaves the machine's
 *   network namespace altogether. Raw and SOCK_PACKET inet sockets forge
 *   packets (and the kernel turns AF_INET + SOCK_PACKET into AF_PACKET).
 *   The network namespace already has no route out: this is a second fence.
 * - personality: only PER_LINUX, PER_LINUX32 and the 0xffffffff query.
 *   The other flags weaken the process's own defences for the next execve
 *   (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO).
 * - Other ABIs: a call through the 32-bit entry point (int 0x80) carries
 *   another audit arch, and a call through the x32 entry point the same
 *   AUDIT_ARCH_X86_64 with bit 30 (__X32_SYSCALL_BIT) set in its number;
 *   either would be numbered differently from the rules above. The filter
 *   holds the native arch only and kills the process on any other (the
 *   bad-arch action). libseccomp's x86_64 filter also sends every number
 *   from 0x40000000 to 0xfffffffe to that action before any rule is looked
 *   at (src/gen_bpf.c "filter out x32"; checked by tests/unit/test_seccomp.c).
 *
 * libseccomp cannot say "refuse unless the argument is one of these values":
 * a rule may test an argument only once (two tests answer EINVAL), and a
 * rule may not have the default action (ALLOW answers EACCES). The two
 * allow-lists (personality, socket families) are therefore a second, small
 * classic-BPF filter stacked on the first. The kernel runs every filter and
 * keeps the strictest answer, so each filter only has to refuse. */
#include "sandbox/seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* The kernel's SOCK_TYPE_MASK: socket types live in the low bits of the
 * type argument, SOCK_NONBLOCK and SOCK_CLOEXEC above them. */
#define SOCK_TYPE_BITS 0xf

/* clone's first argument is its flags, except on s390 where the first two
 * are swapped. */
#if defined(__s390__) || defined(__s390x__)
#define CLONE_FLAGS_ARG 1
#else
#define CLONE_FLAGS_ARG 0
#endif

/* Refused with EPERM whatever their arguments. Names the running arch or
 * this libseccomp does not know are skipped (nfsservctl, iopl and ioperm
 * exist on some arches only). */
static const char *const refused_calls[] = {
	/* other processes' memory */
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
	/* kernel keyrings */
	"keyctl", "add_key", "request_key",
	/* kernel attack surface */
	"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
	"fanotify_init",
	/* the sandbox's own shape */
	"mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
	"fspick", "mount_setattr", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
	/* machine-wide state */
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "acct", "swapon", "swapoff",
	"reboot", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl", "quotactl_fd",
	"iopl", "ioperm", "vhangup", "uselib", "lookup_dcookie", "nfsservctl"
};

/* A rule refuses its call with err when all of its comparisons hold; one
 * without comparisons refuses the call outright. */
struct arg_rule {
	const char *call;
	int err;
	unsigned n_cmp;
	struct scmp_arg_cmp cmp[2];
};

#define MASKED_EQ(argn, mask, value)                                                           \
	{                                                                                      \
		.arg = (argn), .op = SCMP_CMP_MASKED_EQ, .datum_a = (mask), .datum_b = (value) \
	}
/* int and unsigned int arguments: the kernel ignores the upper half of the
 * register, so the filter must too, or a value with high bits set slips by. */
#define LOW32_EQ(argn, value) MASKED_EQ(argn, 0xffffffffu, value)
#define HAS_FLAG(argn, flag)  MASKED_EQ(argn, flag, flag)

#define CLONE_NS_RULE(flag)                             \
	{                                               \
		"clone", EPERM, 1,                      \
		{                                       \
			HAS_FLAG(CLONE_FLAGS_ARG, flag) \
		}                                       \
	}
#define RAW_SOCKET_RULE(call, family, type)                                     \
	{                                                                       \
		call, EPERM, 2,                                                 \
		{                                                               \
			LOW32_EQ(0, family), MASKED_EQ(1, SOCK_TYPE_BITS, type) \
		}                                                               \
	}

static const struct arg_rule arg_rules[] = {
	CLONE_NS_RULE(CLONE_NEWNS),
	CLONE_NS_RULE(CLONE_NEWCGROUP),
	CLONE_NS_RULE(CLONE_NEWUTS),
	CLONE_NS_RULE(CLONE_NEWIPC),
	CLONE_NS_RULE(CLONE_NEWUSER),
	CLONE_NS_RULE(CLONE_NEWPID),
	CLONE_NS_RULE(CLONE_NEWNET),
	CLONE_NS_RULE(CLONE_NEWTIME),
	{ "clone3", ENOSYS, 0, { { 0 } } },
	{ "ioctl", EPERM, 1, { LOW32_EQ(1, TIOCSTI) } },
	{ "ioctl", EPERM, 1, { LOW32_EQ(1, TIOCLINUX) } },
	RAW_SOCKET_RULE("socket", AF_INET, SOCK_RAW),
	RAW_SOCKET_RULE("socket", AF_INET, SOCK_PACKET),
	RAW_SOCKET_RULE("socket", AF_INET6, SOCK_RAW),
	RAW_SOCKET_RULE("socket", AF_INET6, SOCK_PACKET),
	RAW_SOCKET_RULE("socketpair", AF_INET, SOCK_RAW),
	RAW_SOCKET_RULE("socketpair", AF_INET, SOCK_PACKET),
	RAW_SOCKET_RULE("socketpair", AF_INET6, SOCK_RAW),
	RAW_SOCKET_RULE("socketpair", AF_INET6, SOCK_PACKET),
};

static void seccomp_releasep(scmp_filter_ctx *ctx)
{
	if (*ctx)
		seccomp_release(*ctx);
}

/* Adds one rule; a call this arch or libseccomp does not know is skipped. */
static int add_rule(scmp_filter_ctx ctx, const char *call, int err, unsigned n_cmp, const struct scmp_arg_cmp *cmp,
                    char *errbuf, size_t errlen)
{
	int nr = seccomp_syscall_resolve_name(call);
	if (nr < 0) /* __NR_SCMP_ERROR, or a pseudo number: not on this arch */
		return 0;
	int r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO((uint32_t)err), nr, n_cmp, cmp);
	if (r < 0)
		snprintf(errbuf, errlen, "seccomp: cannot add the rule for %s: %s", call, strerror(-r));
	return r;
}

static int add_rules(scmp_filter_ctx ctx, char *errbuf, size_t errlen)
{
	for (size_t i = 0; i < ARRAY_SIZE(refused_calls); i++) {
		int r = add_rule(ctx, refused_calls[i], EPERM, 0, NULL, errbuf, errlen);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(arg_rules); i++) {
		const struct arg_rule *a = &arg_rules[i];
		int r = add_rule(ctx, a->call, a->err, a->n_cmp, a->cmp, errbuf, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

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

	_cleanup_(seccomp_releasep) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		snprintf(errbuf, errlen, "seccomp: cannot create a filter");
		return -ENOMEM;
	}
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r == 0) /* the kernel's errno rather than ECANCELED from seccomp_load */
		r = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (r < 0) {
		snprintf(errbuf, errlen, "seccomp: cannot set the filter's attributes: %s", strerror(-r));
		return r;
	}
	r = add_rules(ctx, errbuf, errlen);
	if (r < 0)
		return r;
	r = seccomp_load(ctx);
	if (r < 0) {
		snprintf(errbuf, errlen, "seccomp: cannot load the filter: %s", strerror(-r));
		return r;
	}
	return install_allow_lists(seccomp_arch_native(), errbuf, errlen);
}
