/* landlock: the Landlock ruleset applied just before the sandbox runs its
 * command.
 *
 * Trust boundary: everything the process runs after sandbox_landlock_apply()
 * returns is untrusted, and so is every process it starts; the domain is
 * inherited and can only be narrowed. The mount namespace decides what the
 * sandbox can see; this layer decides what it may do with what it sees, so
 * that a mount mistake (a host path left visible, a writable bind) does not
 * become a read or write of the host. It also limits TCP to the proxy's
 * port (the network namespace is the first fence there) and, from ABI 6,
 * keeps the sandbox from signalling or reaching the abstract unix sockets
 * of processes outside it (keyward itself, the user's session).
 *
 * What it trusts: the rules it is given (made by keyward from the policy,
 * never by the sandbox). What it must not do: fail open. A right the running
 * kernel cannot enforce is reported in `missing`, never silently dropped;
 * a right the kernel enforces but keyward does not name stays refused.
 * UDP is not covered by any Landlock ABI up to 7; only the network
 * namespace and the seccomp filter hold it.
 *
 * Raw system calls: glibc has no wrappers. Debian 12's headers (Linux 6.1)
 * stop at ABI 1, so what later ABIs added is defined here. */
#include "sandbox/landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13) /* ABI 2 */
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0) /* ABI 4 */
#endif
#ifndef LANDLOCK_ACCESS_NET_CONNECT_TCP
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1) /* ABI 4 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1) /* ABI 6 */
#endif
/* LANDLOCK_RULE_NET_PORT (ABI 4) is an enum constant in newer headers, which
 * #ifndef cannot see, so it gets a name of its own. */
#define SANDBOX_RULE_NET_PORT 2

/* struct landlock_ruleset_attr with every field up to ABI 6; the 6.1
 * headers end it after handled_access_fs. */
struct sandbox_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;             /* ABI 6 */
};

/* struct landlock_net_port_attr (ABI 4) */
struct sandbox_net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

/* The newest ABI whose rights keyward knows. ABI 7 added only logging flags
 * for landlock_restrict_self, nothing to enforce. */
#define ABI_KNOWN 7

#define FS_READ (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
/* The rights that apply to a file; the kernel answers EINVAL to a rule that
 * grants a directory right on anything but a directory. */
#define FS_FILE                                                                                      \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	 LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define FS_ALL                                                                                                    \
	(FS_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE | \
	 LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |               \
	 LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |            \
	 LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER)
#define NET_ALL   (LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP)
#define SCOPE_ALL (LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL)

/* What each ABI added. On an older kernel it is not asked for (the kernel
 * would refuse the whole ruleset) and is reported as missing. */
static const struct abi_feature {
	int abi;
	uint64_t fs, net, scoped;
	const char *what;
} abi_features[] = {
	/* Without ABI 2 the kernel refuses such renames everywhere: stricter,
	 * but a build may trip on it. */
	{ 2, LANDLOCK_ACCESS_FS_REFER, 0, 0, "renames and links across directories are refused (needs ABI 2)" },
	{ 3, LANDLOCK_ACCESS_FS_TRUNCATE, 0, 0, "truncate rules (needs ABI 3)" },
	{ 4, 0, NET_ALL, 0, "TCP port rules (needs ABI 4)" },
	{ 5, LANDLOCK_ACCESS_FS_IOCTL_DEV, 0, 0, "device ioctl rules (needs ABI 5)" },
	{ 6, 0, 0, SCOPE_ALL, "signal and abstract unix socket scoping (needs ABI 6)" },
};

static int fail(int err, char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Writes "landlock: <fmt>: <strerror(err)>" to errbuf and returns -err. */
static int fail(int err, char *errbuf, size_t errlen, const char *fmt, ...)
{
	char what[192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(errbuf, errlen, "landlock: %s: %s", what, strerror(err));
	return -err;
}

static void note_missing(char *buf, size_t len, const char *what)
{
	size_t used = strlen(buf);
	if (used + 1 < len)
		snprintf(buf + used, len - used, "%s%s", used ? "; " : "", what);
}

int sandbox_landlock_abi(void)
{
	long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	return v < 0 ? 0 : (int)v; /* ENOSYS: not built; EOPNOTSUPP: disabled at boot */
}

/* Fills attr with every right the ABI knows, names the rest in missing, and
 * returns the size of attr that the ABI reads. */
static size_t ruleset_for_abi(int abi, struct sandbox_ruleset_attr *attr, char *missing, size_t missing_len)
{
	*attr = (struct sandbox_ruleset_attr){ .handled_access_fs = FS_ALL,
		                               .handled_access_net = NET_ALL,
		                               .scoped = SCOPE_ALL };
	missing[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(abi_features); i++) {
		const struct abi_feature *f = &abi_features[i];
		if (abi >= f->abi)
			continue;
		attr->handled_access_fs &= ~f->fs;
		attr->handled_access_net &= ~f->net;
		attr->scoped &= ~f->scoped;
		note_missing(missing, missing_len, f->what);
	}
	if (abi >= 6)
		return sizeof(*attr);
	if (abi >= 4)
		return offsetof(struct sandbox_ruleset_attr, scoped);
	return offsetof(struct sandbox_ruleset_attr, handled_access_net);
}

static int add_path_rule(int ruleset, const struct sandbox_path_rule *rule, uint64_t handled, char *errbuf,
                         size_t errlen)
{
	uint64_t allowed;
	switch (rule->access) {
	case SANDBOX_READ:
		allowed = FS_READ & handled;
		break;
	case SANDBOX_WRITE:
		allowed = handled;
		break;
	default:
		return fail(EINVAL, errbuf, errlen, "%s: unknown access %d", rule->path, (int)rule->access);
	}

	_cleanup_close_ int fd = open(rule->path, O_PATH | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0; /* nothing there to grant */
		return fail(errno, errbuf, errlen, "%s: cannot open", rule->path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return fail(errno, errbuf, errlen, "%s: cannot stat", rule->path);
	if (!S_ISDIR(st.st_mode))
		allowed &= FS_FILE;

	struct landlock_path_beneath_attr beneath = { .allowed_access = allowed, .parent_fd = fd };
	if (syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0) < 0)
		return fail(errno, errbuf, errlen, "%s: cannot add the rule", rule->path);
	return 0;
}

static int add_port_rule(int ruleset, uint16_t port, char *errbuf, size_t errlen)
{
	struct sandbox_net_port_attr net = { .allowed_access = NET_ALL, .port = port };
	if (syscall(SYS_landlock_add_rule, ruleset, SANDBOX_RULE_NET_PORT, &net, 0) < 0)
		return fail(errno, errbuf, errlen, "TCP port %u: cannot add the rule", (unsigned)port);
	return 0;
}

static int add_rules(int ruleset, const struct sandbox_landlock *ll, const struct sandbox_ruleset_attr *attr,
                     char *errbuf, size_t errlen)
{
	for (size_t i = 0; i < ll->n_paths; i++) {
		if (!ll->paths[i].path)
			return fail(EINVAL, errbuf, errlen, "path rule %zu has no path", i);
		int r = add_path_rule(ruleset, &ll->paths[i], attr->handled_access_fs, errbuf, errlen);
		if (r < 0)
			return r;
	}
	if (attr->handled_access_net == 0) /* ABI < 4: named in missing */
		return 0;
	for (size_t i = 0; i < ll->n_tcp_ports; i++) {
		int r = add_port_rule(ruleset, ll->tcp_ports[i], errbuf, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

int sandbox_landlock_apply(struct sandbox_landlock *ll, char *errbuf, size_t errlen)
{
	int kernel_abi = sandbox_landlock_abi();
	if (kernel_abi == 0)
		return fail(EOPNOTSUPP, errbuf, errlen, "not available in this kernel");
	int abi = kernel_abi < ABI_KNOWN ? kernel_abi : ABI_KNOWN;

	struct sandbox_ruleset_attr attr;
	char missing[sizeof(ll->missing)];
	size_t attr_size = ruleset_for_abi(abi, &attr, missing, sizeof(missing));
	_cleanup_close_ int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (ruleset < 0)
		return fail(errno, errbuf, errlen, "cannot create a ruleset for ABI %d", abi);
	int r = add_rules(ruleset, ll, &attr, errbuf, errlen);
	if (r < 0)
		return r;

	/* Required to restrict oneself without CAP_SYS_ADMIN, and keeps
	 * set-uid binaries from running with more rights inside the domain. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(errno, errbuf, errlen, "cannot set no_new_privs");
	if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
		return fail(errno, errbuf, errlen, "cannot restrict the process");

	ll->abi = abi;
	memcpy(ll->missing, missing, sizeof(missing));
	return 0;
}
