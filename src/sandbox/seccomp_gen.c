/* seccomp-gen: writes the sandbox's deny-list seccomp filter as a C array,
 * at build time (meson runs it; usage: seccomp-gen OUT.c). The filter is
 * fixed, so libseccomp compiles it once per build rather than in every
 * sandbox's PID 1 (half a millisecond on the way to CMD), and keyward does
 * not load libseccomp at run time. seccomp.c installs the result.
 *
 * The filter installed just before the sandbox runs its command:
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
 * - Set-user-ID and set-group-ID files: chmod, fchmod, fchmodat and
 *   fchmodat2 with S_ISUID or S_ISGID in the mode; open and openat with
 *   O_CREAT or O_TMPFILE and either bit in the mode; creat, mknod and
 *   mknodat with either bit. The sandbox's user is the caller on the host
 *   (uid and gid 1000 map to the caller's): a set-uid program left in the
 *   workspace would let any local user who can reach it act as the caller
 *   once the sandbox is gone, and as root when root started keyward. The
 *   mounts inside are nosuid, which helps only inside. The mode of an open
 *   that creates nothing is not read by the kernel (it may be whatever the
 *   register held), so only creating opens are refused; one that names an
 *   existing file with O_CREAT and such a mode is refused too, harmlessly.
 *   openat2 carries its mode in a struct a filter cannot read, so it
 *   answers ENOSYS, as on kernels before 5.6, and callers fall back to
 *   openat. mkdir needs no rule: the kernel keeps only the permission bits
 *   and the sticky bit of its mode (vfs_mkdir); a directory is set-gid only
 *   when its parent already is one on the host, or through chmod, refused
 *   above (so `git init --shared`, which makes its directories set-gid,
 *   fails in the sandbox). Writing to, or chown of, a set-uid file the
 *   workspace already holds clears the bits: the sandbox has no
 *   CAP_FSETID. File capabilities need CAP_SETFCAP, which it lacks too.
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
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "common/util.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* The kernel's own O_TMPFILE bit: glibc's O_TMPFILE (and __O_TMPFILE) also
 * holds O_DIRECTORY, which plain directory opens set. The kernel reads a
 * mode when flags hold O_CREAT or this bit (WILL_CREATE in fs/open.c). */
#define O_TMPFILE_BIT (O_TMPFILE & ~O_DIRECTORY)

/* fchmodat2 (Linux 6.6) is newer than Debian 12's libseccomp 2.5.4, which
 * does not know its name, and than its kernel headers. Since Linux 5.1 a
 * new system call has the same number on every arch except alpha, ia64 and
 * mips. */
#ifndef __NR_fchmodat2
#if defined(__alpha__) || defined(__ia64__) || defined(__mips__)
#error "give fchmodat2's number on this arch"
#endif
#define __NR_fchmodat2 452
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

/* Calls this libseccomp may not know by name, with their number on this
 * arch: a rule for them must not be skipped. */
static const struct newer_call {
	const char *call;
	int nr;
} newer_calls[] = {
	{ "fchmodat2", __NR_fchmodat2 },
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
/* Mode arguments are umode_t: the kernel keeps their low 16 bits, and a
 * mask of one bit ignores the rest of the register. One rule per bit
 * refuses a mode with either or both. open and openat read their mode only
 * when they create a file. */
#define SETID_RULE(call, mode_arg, bit)         \
	{                                       \
		call, EPERM, 1,                 \
		{                               \
			HAS_FLAG(mode_arg, bit) \
		}                               \
	}
#define SETID_CREATE_RULE(call, flags_arg, flag, mode_arg, bit)            \
	{                                                                  \
		call, EPERM, 2,                                            \
		{                                                          \
			HAS_FLAG(flags_arg, flag), HAS_FLAG(mode_arg, bit) \
		}                                                          \
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
	SETID_RULE("chmod", 1, S_ISUID),
	SETID_RULE("chmod", 1, S_ISGID),
	SETID_RULE("fchmod", 1, S_ISUID),
	SETID_RULE("fchmod", 1, S_ISGID),
	SETID_RULE("fchmodat", 2, S_ISUID),
	SETID_RULE("fchmodat", 2, S_ISGID),
	SETID_RULE("fchmodat2", 2, S_ISUID),
	SETID_RULE("fchmodat2", 2, S_ISGID),
	SETID_RULE("creat", 1, S_ISUID),
	SETID_RULE("creat", 1, S_ISGID),
	SETID_RULE("mknod", 1, S_ISUID),
	SETID_RULE("mknod", 1, S_ISGID),
	SETID_RULE("mknodat", 2, S_ISUID),
	SETID_RULE("mknodat", 2, S_ISGID),
	SETID_CREATE_RULE("open", 1, O_CREAT, 2, S_ISUID),
	SETID_CREATE_RULE("open", 1, O_CREAT, 2, S_ISGID),
	SETID_CREATE_RULE("open", 1, O_TMPFILE_BIT, 2, S_ISUID),
	SETID_CREATE_RULE("open", 1, O_TMPFILE_BIT, 2, S_ISGID),
	SETID_CREATE_RULE("openat", 2, O_CREAT, 3, S_ISUID),
	SETID_CREATE_RULE("openat", 2, O_CREAT, 3, S_ISGID),
	SETID_CREATE_RULE("openat", 2, O_TMPFILE_BIT, 3, S_ISUID),
	SETID_CREATE_RULE("openat", 2, O_TMPFILE_BIT, 3, S_ISGID),
	{ "openat2", ENOSYS, 0, { { 0 } } },
};

/* Adds one rule; a call this arch or libseccomp does not know is skipped. */
static int add_rule(scmp_filter_ctx ctx, const char *call, int err, unsigned n_cmp, const struct scmp_arg_cmp *cmp)
{
	int nr = seccomp_syscall_resolve_name(call);
	for (size_t i = 0; nr == __NR_SCMP_ERROR && i < ARRAY_SIZE(newer_calls); i++)
		if (strcmp(call, newer_calls[i].call) == 0)
			nr = newer_calls[i].nr;
	if (nr < 0) /* __NR_SCMP_ERROR, or a pseudo number: not on this arch */
		return 0;
	int r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO((uint32_t)err), nr, n_cmp, cmp);
	if (r < 0)
		fprintf(stderr, "seccomp-gen: cannot add the rule for %s: %s\n", call, strerror(-r));
	return r;
}

static int add_rules(scmp_filter_ctx ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(refused_calls); i++) {
		int r = add_rule(ctx, refused_calls[i], EPERM, 0, NULL);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(arg_rules); i++) {
		const struct arg_rule *a = &arg_rules[i];
		int r = add_rule(ctx, a->call, a->err, a->n_cmp, a->cmp);
		if (r < 0)
			return r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fputs("usage: seccomp-gen OUT.c\n", stderr);
		return 2;
	}
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	FILE *bpf = tmpfile();
	if (!ctx || !bpf) {
		fputs("seccomp-gen: out of memory\n", stderr);
		return 1;
	}
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* A binary tree of system-call numbers, not a list: loading a filter,
	 * the kernel evaluates it for every number to cache the ones it
	 * always allows, and the list's 110 comparisons in a row made that
	 * (and the load) twice as long. The verdicts are the same. */
	if (r == 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (r == 0)
		r = add_rules(ctx);
	if (r == 0)
		r = seccomp_export_bpf(ctx, fileno(bpf));
	uint32_t arch = seccomp_arch_native();
	seccomp_release(ctx);
	if (r < 0) {
		fprintf(stderr, "seccomp-gen: cannot build the filter: %s\n", strerror(-r));
		return 1;
	}
	/* libseccomp wrote to the descriptor: the stream has nothing buffered */
	long size = fseek(bpf, 0, SEEK_END) == 0 ? ftell(bpf) : -1;
	rewind(bpf);
	struct sock_filter insn;
	if (size <= 0 || size % (long)sizeof(insn) != 0 || size / (long)sizeof(insn) > BPF_MAXINSNS) {
		fprintf(stderr, "seccomp-gen: libseccomp exported %ld bytes, not a filter\n", size);
		return 1;
	}
	FILE *out = fopen(argv[1], "w");
	if (!out) {
		fprintf(stderr, "seccomp-gen: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fprintf(out,
	        "/* Written by seccomp-gen (src/sandbox/seccomp_gen.c) at build time. */\n"
	        "#include \"sandbox/seccomp.h\"\n\n"
	        "const uint32_t seccomp_native_arch = 0x%08xu;\n"
	        "const struct sock_filter seccomp_deny_filter[] = {\n",
	        arch);
	for (long i = 0; i < size / (long)sizeof(insn); i++) {
		if (fread(&insn, sizeof(insn), 1, bpf) != 1) {
			fputs("seccomp-gen: cannot read the filter back\n", stderr);
			fclose(out);
			remove(argv[1]);
			return 1;
		}
		fprintf(out, "\t{ 0x%04x, %u, %u, 0x%08xu },\n", insn.code, insn.jt, insn.jf, insn.k);
	}
	fprintf(out, "};\nconst size_t seccomp_deny_filter_len = %ld;\n", size / (long)sizeof(insn));
	if (fclose(out) != 0) {
		fprintf(stderr, "seccomp-gen: %s: %s\n", argv[1], strerror(errno));
		remove(argv[1]);
		return 1;
	}
	fclose(bpf);
	return 0;
}
