/* The namespace sandbox of `keyward run` (see sandbox.h).
 *
 * Trust boundary: everything here runs before CMD, in a child that holds
 * no secret (it is cloned before the parent loads any). Once CMD runs, the
 * only things shared with keyward are the listening socket (the door) and
 * the exit status. The file system is built from descriptors opened
 * without following symbolic links, so that a workspace the sandbox wrote
 * to in an earlier run cannot redirect a bind mount. */
#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/log.h"
#include "sandbox/cgroup.h"
#include "sandbox/landlock.h"
#include "sandbox/seccomp.h"

#define NEWROOT "/tmp" /* where the new root is built, before pivot_root */

/* PID 1's steps stay functions of their own, so that bench/sandbox.sh can
 * time each with a uprobe. */
#define STEP    __attribute__((noinline))
#define MSG_MAX 4096 /* one control message */
#define CA_MAX  (64 * 1024)

#define DEFAULT_TMP_SIZE   (512ull * 1024 * 1024)
#define DEFAULT_PROCESSES  4096
#define DEFAULT_OPEN_FILES 4096

/* The parts of the host's /etc that programs need. Everything else of /etc
 * (shadow, sudoers, ssh host keys, ssl/private, ...) stays out. */
static const char *const etc_entries[] = {
	"alternatives",
	"bash.bashrc",
	"ca-certificates",
	"ca-certificates.conf",
	"debian_version",
	"gai.conf",
	"gitconfig",
	"host.conf",
	"inputrc",
	"ld.so.cache",
	"ld.so.conf",
	"ld.so.conf.d",
	"locale.alias",
	"localtime",
	"magic",
	"magic.mime",
	"mime.types",
	"nanorc",
	"os-release",
	"perl",
	"profile",
	"profile.d",
	"protocols",
	"python3",
	"python3.11",
	"rpc",
	"services",
	"shells",
	"ssl/certs",
	"ssl/openssl.cnf",
	"terminfo",
	"timezone",
	"vim",
	"wgetrc",
	"xdg",
};

/* Top-level directories shown read-only (or re-created as the symbolic
 * links they are on a merged-/usr system). */
static const char *const system_dirs[] = { "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32" };

static const char *const dev_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };

/* ---- the child's error channel ---- */

/* The child reports the first failure to the parent as text and exits. */
static int ctl_fd = -1;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;
	msg[0] = 'E';
	va_start(ap, fmt);
	vsnprintf(msg + 1, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (ctl_fd < 0 || send(ctl_fd, msg, strlen(msg), MSG_NOSIGNAL) < 0)
		fprintf(stderr, "keyward run: %s\n", msg + 1);
	_exit(126);
}

#define die_errno(fmt, ...) die(fmt ": %s", ##__VA_ARGS__, strerror(errno))

static void verbose(const struct sandbox_spec *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void verbose(const struct sandbox_spec *spec, const char *fmt, ...)
{
	if (!spec->verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("keyward run: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static ssize_t recv_all(int fd, char *buf, size_t len);

/* ---- small file helpers (child) ---- */

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		die_errno("cannot create %s", path);
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die_errno("cannot write %s", path);
		data += n;
		len -= (size_t)n;
	}
	close(fd);
}

static void write_text(const char *path, const char *text)
{
	write_file(path, text, strlen(text), 0644);
}

/* mkdir -p below NEWROOT; `path` is absolute inside the sandbox. */
static void make_dirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	int n = snprintf(buf, sizeof(buf), NEWROOT "%s", path);
	if (n < 0 || (size_t)n >= sizeof(buf))
		die("path too long: %s", path);
	for (char *p = buf + strlen(NEWROOT) + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			die_errno("cannot create %s", buf);
		*p = c;
		if (!c)
			break;
	}
}

static void in_root(char *out, size_t outlen, const char *path)
{
	int n = snprintf(out, outlen, NEWROOT "%s", path);
	if (n < 0 || (size_t)n >= outlen)
		die("path too long: %s", path);
}

/* ---- mounts (child) ---- */

/* Opens a host path without following any symbolic link on the way. */
static int open_nofollow(const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
}

/* Attaches a copy of the mount tree of the object open at src (read-only
 * unless write, nodev unless allow_dev, nosuid always; every mount below
 * it too, before it is attached) at target: a path, or the object open at
 * at_fd when target is "". dst names it in errors. */
static void attach_copy(int src, int at_fd, const char *target, bool write, bool allow_dev, const char *dst)
{
	int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
	if (tree < 0)
		die_errno("cannot copy the mount of %s", dst);
	struct mount_attr attr = { .attr_set = MOUNT_ATTR_NOSUID };
	if (!write)
		attr.attr_set |= MOUNT_ATTR_RDONLY;
	if (!allow_dev)
		attr.attr_set |= MOUNT_ATTR_NODEV;
	if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
		die_errno("cannot make %s read-only", dst);
	unsigned flags = MOVE_MOUNT_F_EMPTY_PATH | (*target ? 0 : MOVE_MOUNT_T_EMPTY_PATH);
	if (move_mount(tree, "", at_fd, target, flags) < 0)
		die_errno("cannot mount %s", dst);
	close(tree);
}

/* Binds the host object open at `src` to `dst` (inside the sandbox),
 * read-only unless `write`. The copy is made read-only before it is
 * attached, and every mount below it too. */
static void bind_fd(int src, const char *dst, bool write, bool allow_dev)
{
	char target[PATH_MAX];
	struct stat st;
	if (fstat(src, &st) < 0)
		die_errno("cannot stat the source of %s", dst);

	in_root(target, sizeof(target), dst);
	struct stat existing;
	if (lstat(target, &existing) == 0) {
		/* mounting over something already there (e.g. the CA bundle) */
	} else if (S_ISDIR(st.st_mode)) {
		make_dirs(dst, 0755);
	} else {
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s", dst);
		char *slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = '\0';
			make_dirs(parent, 0755);
		}
		int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			die_errno("cannot create the mount point %s", dst);
		close(fd);
	}

	attach_copy(src, AT_FDCWD, target, write, allow_dev, dst);
}

/* Binds a host path at the same path inside. A path that does not exist
 * is skipped when `optional`. A symbolic link on the way is refused. */
static void bind_path(const char *path, bool write, bool optional)
{
	int fd = open_nofollow(path);
	if (fd < 0) {
		if (errno == ENOENT && optional)
			return;
		if (errno == ELOOP)
			die("%s: a symbolic link is in the way; name the real path", path);
		die_errno("cannot open %s", path);
	}
	bind_fd(fd, path, write, false);
	close(fd);
}

/* A symbolic link on the host is re-created as the same link. */
static bool copy_symlink(const char *path)
{
	char target[PATH_MAX], dst[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	in_root(dst, sizeof(dst), path);
	if (symlink(target, dst) < 0 && errno != EEXIST)
		die_errno("cannot create the link %s", path);
	return true;
}

static void mount_tmpfs(const char *dst, const char *opts, unsigned long flags)
{
	char target[PATH_MAX];
	make_dirs(dst, 0755);
	in_root(target, sizeof(target), dst);
	if (mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | flags, opts) < 0)
		die_errno("cannot mount a tmpfs on %s", dst);
}

static void mount_system(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(system_dirs); i++) {
		struct stat st;
		if (lstat(system_dirs[i], &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode))
			copy_symlink(system_dirs[i]);
		else
			bind_path(system_dirs[i], false, true);
	}
}

/* A small file of /etc is copied rather than bound. Measured on a 2-vCPU
 * VM (kernel 6.18): a copy into the tmpfs ~14 us; a bind (open_tree,
 * mount_setattr, move_mount) ~11 us, plus its mount point and ~10 us more
 * when the sandbox's mount namespace is torn down; so a copy is no dearer
 * and leaves no mount behind. The root is made read-only at the end, so
 * the copy is as read-only as a bind. */
#define ETC_COPY_MAX (64 * 1024)

static bool copy_file(const char *path, const struct stat *st)
{
	char buf[ETC_COPY_MAX], dst[PATH_MAX];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return false;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (len += (size_t)n) == sizeof(buf))
			break;
	}
	close(fd);
	if (len == sizeof(buf))
		return false; /* grew past the bound: bind it instead */
	in_root(dst, sizeof(dst), path);
	write_file(dst, buf, len, st->st_mode & 0644);
	return true;
}

static void write_etc(void)
{
	char path[PATH_MAX];
	make_dirs("/etc/ssl", 0755);
	for (size_t i = 0; i < ARRAY_SIZE(etc_entries); i++) {
		snprintf(path, sizeof(path), "/etc/%s", etc_entries[i]);
		struct stat st;
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode))
			copy_symlink(path);
		else if (!S_ISREG(st.st_mode) || st.st_size > ETC_COPY_MAX || !copy_file(path, &st))
			bind_path(path, false, true);
	}
	in_root(path, sizeof(path), "/etc/passwd");
	write_text(path, "root:x:0:0:root:/root:/usr/sbin/nologin\n"
	                 "sandbox:x:1000:1000:sandbox:" SANDBOX_HOME ":/bin/bash\n"
	                 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
	in_root(path, sizeof(path), "/etc/group");
	write_text(path, "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n");
	in_root(path, sizeof(path), "/etc/hosts");
	write_text(path, "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n");
	in_root(path, sizeof(path), "/etc/hostname");
	write_text(path, "sandbox\n");
	in_root(path, sizeof(path), "/etc/resolv.conf");
	write_text(path, "# keyward: the sandbox has no resolver and no route out.\n"
	                 "# Names are resolved by keyward's proxy, after its policy allowed them.\n");
	in_root(path, sizeof(path), "/etc/nsswitch.conf");
	write_text(path, "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
	                 "networks: files\nprotocols: files\nservices: files\n");
}

/* The CA bundle: the system's roots, written while keyward makes this
 * run's CA; the CA's certificate is appended when it arrives
 * (install_ca). Returns the bundle, open for writing. */
static int prepare_bundle(void)
{
	char path[PATH_MAX];
	make_dirs("/etc/keyward", 0755);
	in_root(path, sizeof(path), "/etc/keyward/ca-bundle.pem");
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (out < 0)
		die_errno("cannot create %s", path);
	int in = open("/etc/ssl/certs/ca-certificates.crt", O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (in >= 0 && fstat(in, &st) == 0 && st.st_size > 0) {
		/* copied by the kernel, without a trip through our memory */
		off_t off = 0;
		while (off < st.st_size) {
			ssize_t n = sendfile(out, in, &off, (size_t)(st.st_size - off));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				die_errno("cannot copy the system's CA bundle");
			if (n == 0)
				break; /* it shrank meanwhile: what was there is copied */
		}
		char last = '\n';
		if (off > 0 && pread(in, &last, 1, off - 1) == 1 && last != '\n' && write(out, "\n", 1) != 1)
			die_errno("cannot write the CA bundle");
	}
	if (in >= 0)
		close(in);
	/* Programs that ignore the variables read the distribution's bundle:
	 * the same file is bound over it (what is appended later shows). */
	in_root(path, sizeof(path), "/etc/ssl/certs/ca-certificates.crt");
	if (access(path, F_OK) == 0) {
		int src = open_nofollow(NEWROOT "/etc/keyward/ca-bundle.pem");
		if (src < 0)
			die_errno("cannot open the CA bundle");
		bind_fd(src, "/etc/ssl/certs/ca-certificates.crt", false, false);
		close(src);
	}
	return out;
}

/* keyward sends this run's CA certificate once it has made it (in parallel
 * with the file system being built; it is the last thing PID 1 waits for
 * before the root is made read-only); the key stays with keyward. */
STEP static void install_ca(const struct sandbox_spec *spec, int bundle)
{
	_cleanup_free_ char *ca_pem = malloc(CA_MAX + 1);
	if (!ca_pem)
		die("out of memory");
	ssize_t got = recv_all(ctl_fd, ca_pem, CA_MAX);
	if (got <= 0)
		_exit(126); /* keyward went away */
	ca_pem[got] = '\0';

	write_text("/etc/keyward/ca.pem", ca_pem); /* in the new root */
	for (const char *p = ca_pem; *p;) {
		ssize_t n = write(bundle, p, strlen(p));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die_errno("cannot write the CA bundle");
		p += n;
	}
	close(bundle);
	verbose(spec, "CA bundle (system roots and this run's CA) at /etc/keyward/ca-bundle.pem");
}

static void mount_dev(void)
{
	char path[PATH_MAX];
	mount_tmpfs("/dev", "mode=0755,size=64k", MS_NOEXEC);
	for (size_t i = 0; i < ARRAY_SIZE(dev_nodes); i++) {
		snprintf(path, sizeof(path), "/dev/%s", dev_nodes[i]);
		int fd = open_nofollow(path);
		if (fd < 0)
			continue; /* no /dev/tty without a terminal */
		/* Read-only: reading and writing a device node needs no write
		 * access to its mount, while changing the node (chmod, chown,
		 * utimes) does, and the node is the host's: a root caller's
		 * sandbox owns it and could otherwise chmod the host's /dev/null. */
		bind_fd(fd, path, false, true);
		close(fd);
	}
	make_dirs("/dev/pts", 0755);
	in_root(path, sizeof(path), "/dev/pts");
	if (mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
		die_errno("cannot mount a private /dev/pts");
	static const char *const links[][2] = {
		{ "pts/ptmx", "/dev/ptmx" },          { "/proc/self/fd", "/dev/fd" },
		{ "/proc/self/fd/0", "/dev/stdin" },  { "/proc/self/fd/1", "/dev/stdout" },
		{ "/proc/self/fd/2", "/dev/stderr" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(links); i++) {
		in_root(path, sizeof(path), links[i][1]);
		if (symlink(links[i][0], path) < 0)
			die_errno("cannot create %s", links[i][1]);
	}
	mount_tmpfs("/dev/shm", "mode=1777,size=64m", MS_NOEXEC);
}

static void hide_path(const char *host_path);

static void mount_proc(void)
{
	char path[PATH_MAX];
	make_dirs("/proc", 0555);
	in_root(path, sizeof(path), "/proc");
	if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die_errno("cannot mount /proc");
	/* /proc/sys and friends read-only, as in every container runtime. */
	static const char *const ro[] = { "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus" };
	for (size_t i = 0; i < ARRAY_SIZE(ro); i++) {
		in_root(path, sizeof(path), ro[i]);
		int fd = open_nofollow(path);
		if (fd < 0)
			continue;
		bind_fd(fd, ro[i], false, false);
		close(fd);
	}
	/* Files that show the host rather than the sandbox: the kernel keys
	 * of the caller's uid (the sandbox's uid maps to it), timers and the
	 * scheduler of every process, kernel memory. Covered, as container
	 * runtimes mask them. */
	static const char *const masked[] = { "/proc/keys",        "/proc/key-users",    "/proc/timer_list",
		                              "/proc/sched_debug", "/proc/kcore",        "/proc/latency_stats",
		                              "/proc/kallsyms",    "/proc/sysrq-trigger" };
	for (size_t i = 0; i < ARRAY_SIZE(masked); i++)
		hide_path(masked[i]);
	/* Kernel memory layout and page state, readable by root only: the
	 * sandbox's user owns them when root started keyward (its uid maps to
	 * root), and then they are covered too; for anyone else they stay as
	 * they are, unreadable, and no mount is spent on them. */
	static const char *const root_only[] = { "/proc/kpageflags", "/proc/kpagecount",  "/proc/kpagecgroup",
		                                 "/proc/slabinfo",   "/proc/vmallocinfo", "/proc/pagetypeinfo" };
	for (size_t i = 0; i < ARRAY_SIZE(root_only); i++) {
		struct stat st;
		in_root(path, sizeof(path), root_only[i]);
		if (lstat(path, &st) == 0 && (st.st_uid == SANDBOX_UID || (st.st_mode & 0044)))
			hide_path(root_only[i]);
	}
}

/* Whether the first symbolic link on the way to path (in the new root) is
 * one of the new root's own (/var/tmp -> /tmp, the merged /usr links): it
 * lies in a folder of the root's tmpfs, not in a host folder bound into
 * it. The host path behind it is then not visible in the sandbox at all. */
static bool link_is_the_roots_own(const char *path)
{
	struct stat root, st;
	char prefix[PATH_MAX];
	if (stat(NEWROOT, &root) < 0)
		return false;
	size_t n = strlen(path), start = strlen(NEWROOT);
	for (size_t i = start + 1; i <= n && i < sizeof(prefix); i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		memcpy(prefix, path, i);
		prefix[i] = '\0';
		if (lstat(prefix, &st) < 0)
			return false;
		if (!S_ISLNK(st.st_mode))
			continue;
		char *slash = strrchr(prefix, '/');
		*slash = '\0';
		return stat(prefix, &st) == 0 && st.st_dev == root.st_dev;
	}
	return false;
}

/* Covers a host path that must stay invisible (keyward's state, the audit
 * log) with an empty read-only file or directory, when it lies under a
 * path the sandbox can see. The path is opened without following a
 * symbolic link and the cover goes onto what was opened: a link planted
 * on the way (a folder of the workspace that an earlier sandbox replaced
 * with a link) must not move the cover off the real object. */
static void hide_path(const char *host_path)
{
	char path[PATH_MAX];
	struct stat st;
	in_root(path, sizeof(path), host_path);
	_cleanup_close_ int target = open_nofollow(path);
	if (target < 0 && (errno == ENOENT || errno == ENOTDIR))
		return; /* not visible: nothing to hide */
	if (target < 0 && errno == ELOOP && link_is_the_roots_own(path))
		return; /* e.g. under /var/tmp, which is the sandbox's own /tmp */
	if (target < 0 && errno == ELOOP)
		die("cannot hide %s: a symbolic link lies on its path in the sandbox's view "
		    "(a folder replaced with a link?); refusing to run",
		    host_path);
	if (target < 0 || fstat(target, &st) < 0)
		die_errno("cannot hide %s", host_path);
	if (S_ISDIR(st.st_mode)) {
		char at[64];
		snprintf(at, sizeof(at), "/proc/self/fd/%d", target);
		if (mount("tmpfs", at, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555") < 0)
			die_errno("cannot hide %s", host_path);
		return;
	}
	/* /dev/null without device access: it reads as empty and cannot be
	 * opened for writing on a nodev, read-only mount */
	_cleanup_close_ int null = open_nofollow("/dev/null");
	if (null < 0)
		die_errno("cannot open /dev/null");
	attach_copy(null, target, "", false, false, host_path);
}

static uint64_t or_default(uint64_t v, uint64_t def)
{
	return v ? v : def;
}

/* The host's NEWROOT, opened before the new root covers it: a workspace or
 * a listed path below it is opened from here. */
static int host_newroot = -1;

/* Opens a host path as open_nofollow() does, also below NEWROOT. */
static int open_host(const char *path)
{
	size_t n = strlen(NEWROOT);
	if (strncmp(path, NEWROOT, n) != 0 || (path[n] != '/' && path[n] != '\0'))
		return open_nofollow(path);
	const char *rest = path + n;
	while (*rest == '/')
		rest++;
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, host_newroot, *rest ? rest : ".", &how, sizeof(how));
}

/* What every sandbox has, built while keyward reads its policy: the new
 * root with the system's folders, /etc, /dev and /proc. Returns the CA
 * bundle, open for writing (prepare_bundle). */
STEP static int build_common(void)
{
	/* Our mounts must not propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die_errno("cannot make the mounts private");
	host_newroot = open(NEWROOT, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (host_newroot < 0)
		die_errno("cannot open %s", NEWROOT);
	if (mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m") < 0)
		die_errno("cannot mount the new root");
	mount_system();
	write_etc();
	int bundle = prepare_bundle();
	mount_dev();
	mount_proc();
	return bundle;
}

/* The rest, from the policy: /tmp and $HOME, the workspace, the listed
 * paths, what must stay hidden; then into the new root (read-only once
 * the CA is in: seal_root). */
STEP static void finish_root(const struct sandbox_spec *spec)
{
	const struct policy_sandbox *sb = &spec->sb;
	char opts[128], path[PATH_MAX];

	int ws = open_host(spec->workspace);
	if (ws < 0)
		die_errno("cannot open the workspace %s (it must be named without symbolic links)", spec->workspace);
	int extra[SANDBOX_MAX_PATHS];
	for (size_t i = 0; i < sb->n_paths; i++) {
		extra[i] = open_host(sb->paths[i].path);
		if (extra[i] < 0 && errno == ELOOP)
			die("sandbox path %s: a symbolic link is in the way; name the real path", sb->paths[i].path);
		if (extra[i] < 0)
			die_errno("sandbox path %s", sb->paths[i].path);
	}
	close(host_newroot);
	host_newroot = -1;
	verbose(spec, "/etc: %zu entries of the host's; passwd, group, hosts, resolv.conf written",
	        ARRAY_SIZE(etc_entries));

	uint64_t tmp = or_default(sb->tmp_size, DEFAULT_TMP_SIZE);
	snprintf(opts, sizeof(opts), "mode=1777,size=%llu", (unsigned long long)tmp);
	mount_tmpfs("/tmp", opts, 0);
	snprintf(opts, sizeof(opts), "mode=0700,size=%llu", (unsigned long long)tmp);
	mount_tmpfs(SANDBOX_HOME, opts, 0);
	make_dirs("/var/tmp", 0755);
	in_root(path, sizeof(path), "/var/tmp");
	(void)rmdir(path);
	if (symlink("/tmp", path) < 0)
		die_errno("cannot create /var/tmp");
	make_dirs("/run", 0755);

	bind_fd(ws, spec->workspace, true, false);
	close(ws);
	for (size_t i = 0; i < sb->n_paths; i++) {
		bind_fd(extra[i], sb->paths[i].path, sb->paths[i].write, false);
		close(extra[i]);
		verbose(spec, "%s: %s", sb->paths[i].path, sb->paths[i].write ? "read-write" : "read-only");
	}
	for (size_t i = 0; i < spec->n_hide; i++)
		hide_path(spec->hide[i]);
	verbose(spec, "workspace %s: read-write; /tmp and %s: private tmpfs of %llu bytes", spec->workspace,
	        SANDBOX_HOME, (unsigned long long)tmp);

	/* Into the new root; the old one is detached and gone. */
	if (chdir(NEWROOT) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		die_errno("cannot switch to the new root");
	if (umount2(".", MNT_DETACH) < 0)
		die_errno("cannot detach the old root");
	if (chdir("/") < 0)
		die_errno("cannot enter the new root");
}

static void seal_root(void)
{
	struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY };
	if (mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof(ro)) < 0)
		die_errno("cannot make / read-only");
}

/* ---- network (child) ---- */

static int open_door(uint16_t *port)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die_errno("socket");
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		die_errno("cannot read the flags of lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		die_errno("cannot bring lo up");
	close(s);

	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die_errno("socket");
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		die_errno("cannot open the proxy socket");
	*port = ntohs(sin.sin_port);
	return fd;
}

static void send_door(int fd, uint16_t port)
{
	char msg[8];
	int n = snprintf(msg, sizeof(msg), "K%u", (unsigned)port);
	struct iovec iov = { .iov_base = msg, .iov_len = (size_t)n };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(ctl_fd, &mh, MSG_NOSIGNAL) < 0)
		die_errno("cannot hand the proxy socket to keyward");
}

/* ---- privileges and limits (child) ---- */

static void set_limit(int res, uint64_t v, const char *what)
{
	struct rlimit rl = { .rlim_cur = v, .rlim_max = v };
	struct rlimit cur;
	if (getrlimit(res, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && cur.rlim_max < v)
		rl.rlim_cur = rl.rlim_max = cur.rlim_max; /* never raise */
	if (setrlimit(res, &rl) < 0)
		die_errno("cannot set the %s limit", what);
}

static void set_limits(const struct sandbox_spec *spec)
{
	const struct policy_sandbox *sb = &spec->sb;
	set_limit(RLIMIT_CORE, 0, "core dump");
	set_limit(RLIMIT_NOFILE, or_default(sb->open_files, DEFAULT_OPEN_FILES), "open files");
	set_limit(RLIMIT_NPROC, or_default(sb->processes, DEFAULT_PROCESSES), "processes");
	if (sb->file_size)
		set_limit(RLIMIT_FSIZE, sb->file_size, "file size");
}

static void drop_privileges(void)
{
	int last = CAP_LAST_CAP;
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	if (f) {
		if (fscanf(f, "%d", &last) != 1)
			last = CAP_LAST_CAP;
		fclose(f);
	}
	for (int cap = 0; cap <= last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			die_errno("cannot drop capability %d from the bounding set", cap);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		die_errno("cannot clear the ambient capabilities");
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = { 0 };
	if (syscall(SYS_capset, &hdr, data) < 0)
		die_errno("cannot clear the capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die_errno("cannot set no_new_privs");
}

static void fences(const struct sandbox_spec *spec, uint16_t port)
{
	const struct policy_sandbox *sb = &spec->sb;
	char err[256] = "";
	struct sandbox_path_rule rules[8 + SANDBOX_MAX_PATHS];
	size_t n = 0;
	rules[n++] = (struct sandbox_path_rule){ "/", SANDBOX_READ };
	rules[n++] = (struct sandbox_path_rule){ "/dev", SANDBOX_WRITE };
	rules[n++] = (struct sandbox_path_rule){ "/proc", SANDBOX_WRITE };
	rules[n++] = (struct sandbox_path_rule){ "/tmp", SANDBOX_WRITE };
	rules[n++] = (struct sandbox_path_rule){ SANDBOX_HOME, SANDBOX_WRITE };
	rules[n++] = (struct sandbox_path_rule){ spec->workspace, SANDBOX_WRITE };
	for (size_t i = 0; i < sb->n_paths; i++)
		if (sb->paths[i].write)
			rules[n++] = (struct sandbox_path_rule){ sb->paths[i].path, SANDBOX_WRITE };
	uint16_t ports[1 + SANDBOX_MAX_PORTS];
	ports[0] = port;
	memcpy(ports + 1, sb->ports, sb->n_ports * sizeof(ports[0]));
	struct sandbox_landlock ll = {
		.paths = rules, .n_paths = n, .tcp_ports = ports, .n_tcp_ports = 1 + sb->n_ports
	};
	int r = sandbox_landlock_apply(&ll, err, sizeof(err));
	if (r == -EOPNOTSUPP) {
		if (sb->require_landlock)
			die("the policy says landlock: required, and this kernel has no Landlock");
		verbose(spec, "Landlock: not available in this kernel; the namespaces and seccomp still apply");
	} else if (r < 0) {
		die("Landlock: %s", err);
	} else if (ll.missing[0]) {
		if (sb->require_landlock)
			die("the policy says landlock: required, and this kernel's Landlock (ABI %d) lacks %s", ll.abi,
			    ll.missing);
		verbose(spec, "Landlock ABI %d: file system, TCP ports %u and the listed ones; missing: %s", ll.abi,
		        (unsigned)port, ll.missing);
	} else {
		verbose(
		    spec,
		    "Landlock ABI %d: file system, TCP ports (%u and %zu listed), signal and abstract socket scoping",
		    ll.abi, (unsigned)port, sb->n_ports);
	}
	r = sandbox_seccomp_install(err, sizeof(err));
	if (r < 0)
		die("seccomp: %s", err);
	verbose(spec, "seccomp filter installed; capabilities empty, bounding set dropped, no_new_privs");
}

/* ---- environment (child) ---- */

struct envv {
	char *v[64 + SANDBOX_MAX_ENV + 64];
	size_t n;
};

static void env_add(struct envv *e, const char *name, const char *value)
{
	if (e->n + 1 >= ARRAY_SIZE(e->v))
		die("too many environment variables");
	if (asprintf(&e->v[e->n], "%s=%s", name, value) < 0)
		die("out of memory");
	e->n++;
}

static void build_env(const struct sandbox_spec *spec, uint16_t port, struct envv *e)
{
	char proxy[64];
	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%u", (unsigned)port);

	env_add(e, "PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin");
	env_add(e, "HOME", SANDBOX_HOME);
	env_add(e, "USER", "sandbox");
	env_add(e, "LOGNAME", "sandbox");
	env_add(e, "SHELL", "/bin/bash");
	const char *lang = getenv("LANG");
	env_add(e, "LANG", lang && *lang && strlen(lang) < 64 ? lang : "C.UTF-8");
	const char *term = getenv("TERM");
	if (term && *term && strlen(term) < 64)
		env_add(e, "TERM", term);
	static const char *const proxy_vars[] = { "HTTP_PROXY",  "HTTPS_PROXY", "http_proxy",
		                                  "https_proxy", "ALL_PROXY",   "all_proxy" };
	for (size_t i = 0; i < ARRAY_SIZE(proxy_vars); i++)
		env_add(e, proxy_vars[i], proxy);
	env_add(e, "NO_PROXY", "");
	env_add(e, "no_proxy", "");
	static const char *const ca_vars[] = { "SSL_CERT_FILE",  "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
		                               "GIT_SSL_CAINFO", "AWS_CA_BUNDLE",      "PIP_CERT" };
	for (size_t i = 0; i < ARRAY_SIZE(ca_vars); i++)
		env_add(e, ca_vars[i], "/etc/keyward/ca-bundle.pem");
	env_add(e, "NODE_EXTRA_CA_CERTS", "/etc/keyward/ca.pem");
	env_add(e, "KEYWARD_SANDBOX", "1");
	for (const char *const *c = spec->cred_env; c && c[0] && c[1]; c += 2)
		env_add(e, c[0], c[1]);
	for (char **name = spec->sb.env; name && *name; name++) {
		const char *v = getenv(*name);
		if (v)
			env_add(e, *name, v);
	}
	e->v[e->n] = NULL;
}

/* PID 1 was forked from keyward, not executed: its environment block and
 * argument area are keyward's, which may hold a credential's source
 * variable. Wipe both, so that /proc/1/environ and /proc/1/cmdline show
 * nothing (PID 1 is also made non-dumpable). */
static void wipe_inherited(int argc, char **argv)
{
	extern char **environ;
	for (char **e = environ; e && *e; e++)
		explicit_bzero(*e, strlen(*e));
	if (argc > 0) {
		char *args = argv[0];
		size_t len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - args);
		explicit_bzero(args, len);
		snprintf(args, len, "keyward-init");
	}
}

/* ---- PID 1 ---- */

static volatile sig_atomic_t cmd_pid;
/* CMD leads a process group of its own (spec->own_group): a signal keyward
 * passes on goes to that whole group, as one sent to keyward's group
 * reached CMD and its children when they shared it. */
static bool cmd_own_group;

static void forward_signal(int sig)
{
	if (cmd_pid > 0)
		kill(cmd_own_group ? -(pid_t)cmd_pid : (pid_t)cmd_pid, sig);
}

static const int forwarded[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCONT, SIGWINCH };

/* The start of CMD, in a vfork child: it shares PID 1's memory until the
 * exec, so it makes system calls only and leaves its errno where PID 1
 * reads it. */
static volatile int exec_errno;

__attribute__((noreturn)) static void exec_cmd(char **cmd, char **envp)
{
	sigset_t none;
	sigemptyset(&none);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		signal(forwarded[i], SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if (cmd_own_group && setpgid(0, 0) < 0) {
		exec_errno = errno;
		_exit(126);
	}
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (close_range(3, ~0U, 0) < 0) {
		exec_errno = errno;
		_exit(126);
	}
	execvpe(cmd[0], cmd, envp);
	exec_errno = errno;
	_exit(errno == ENOENT ? 127 : 126);
}

/* CMD starts with an empty signal mask, default dispositions, no
 * descriptor beyond 0-2, in the workspace (in $HOME if the workspace has
 * gone), with the sandbox's environment. vfork, not fork: a fork would
 * copy PID 1's page tables (those of the keyward front it was cloned
 * from) only for the exec to throw them away. */
static pid_t spawn_cmd(const char *workspace, char **cmd, char **envp)
{
	if (chdir(workspace) < 0 && chdir(SANDBOX_HOME) < 0)
		die_errno("cannot enter the workspace %s", workspace);
	/* execvpe looks CMD up in the caller's PATH: the sandbox's */
	extern char **environ;
	environ = envp;
	exec_errno = 0;
	pid_t pid = vfork();
	if (pid == 0)
		exec_cmd(cmd, envp);
	if (pid < 0)
		die_errno("cannot start %s", cmd[0]);
	if (exec_errno)
		fprintf(stderr, "keyward run: %s: %s\n", cmd[0], strerror(exec_errno));
	return pid;
}

bool sandbox_own_group(void)
{
	int tty = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
	if (tty < 0)
		return true; /* no controlling terminal */
	pid_t fg = tcgetpgrp(tty);
	close(tty);
	return fg != getpgrp();
}

/* Starts CMD, forwards signals to it, reaps every orphan, and exits with
 * CMD's status when it ends (which ends every process in the sandbox). */
__attribute__((noreturn)) static void init_loop(const char *workspace, char **cmd, char **envp)
{
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	/* From here a failure is told on stderr (die); the socket only says
	 * when CMD has ended, so that keyward can finish its audit log while
	 * the kernel tears the sandbox down after us. CMD never has it: it is
	 * close-on-exec, and exec_cmd closes every descriptor beyond 2. */
	int notice = ctl_fd;
	ctl_fd = -1;
	pid_t pid = spawn_cmd(workspace, cmd, envp);
	cmd_pid = pid;
	struct sigaction sa = { .sa_handler = forward_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaction(forwarded[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	for (;;) {
		int st;
		pid_t r = waitpid(-1, &st, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			_exit(126);
		if (r == pid) {
			(void)send(notice, "X", 1, MSG_NOSIGNAL);
			if (WIFSIGNALED(st))
				_exit(128 + WTERMSIG(st));
			_exit(WEXITSTATUS(st));
		}
	}
}

static ssize_t recv_all(int fd, char *buf, size_t len)
{
	ssize_t n;
	do
		n = recv(fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	return n;
}

/* The spec keyward sent (sandbox_configure): a pointer into the arena,
 * which this process shares with keyward at the same address. */
STEP static const struct sandbox_spec *recv_spec(const struct sandbox *sb)
{
	char msg[1 + sizeof(void *)];
	if (recv_all(ctl_fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg) || msg[0] != 'C')
		_exit(126); /* keyward went away, or stopped before CMD */
	const struct sandbox_spec *spec;
	memcpy(&spec, msg + 1, sizeof(spec));
	uintptr_t at = (uintptr_t)spec, base = (uintptr_t)sb->arena;
	if (at < base || at + sizeof(*spec) > base + sb->arena_size)
		die("keyward sent a configuration outside the shared memory");
	return spec;
}

/* Moves PID 1 into the cgroup v1 groups keyward made for it when keyward
 * sends their `tasks` files ('J'), then waits for the go ('G'), which
 * keyward gives once the sandbox is in its cgroup. "0" moves the writer
 * alone (PID 1 has no other thread) without the kernel's cgroup
 * threadgroup lock (sandbox.h, join_fd). The first failure's errno goes
 * back to keyward, which decides whether the run goes on. */
static void join_then_wait_go(void)
{
	for (;;) {
		char msg[8];
		union {
			char buf[CMSG_SPACE(4 * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) };
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)
		};
		ssize_t n;
		do
			n = recvmsg(ctl_fd, &mh, MSG_CMSG_CLOEXEC);
		while (n < 0 && errno == EINTR);
		struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
		int fds[4], n_fds = 0;
		if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len >= CMSG_LEN(0) &&
		    cm->cmsg_len <= CMSG_LEN(sizeof(fds))) {
			n_fds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(cm), (size_t)n_fds * sizeof(int));
		}
		if (n == 1 && msg[0] == 'G' && n_fds == 0)
			return;
		if (n != 1 || msg[0] != 'J' || (mh.msg_flags & MSG_CTRUNC))
			_exit(126); /* keyward went away, or stopped before CMD */
		int err = 0;
		for (int i = 0; i < n_fds; i++) {
			if (write(fds[i], "0", 1) != 1 && !err)
				err = errno ? errno : EIO;
			close(fds[i]);
		}
		char reply[16];
		int len = snprintf(reply, sizeof(reply), "J%d", err);
		if (send(ctl_fd, reply, (size_t)len, MSG_NOSIGNAL) != len)
			_exit(126);
	}
}

__attribute__((noreturn)) static void child_main(const struct sandbox *sb)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL); /* keyward blocks them while it starts */
	/* Nothing the caller left open passes into the sandbox. */
	if ((ctl_fd > 3 && close_range(3, (unsigned)ctl_fd - 1, 0) < 0) ||
	    close_range((unsigned)ctl_fd + 1, ~0U, 0) < 0)
		die_errno("close_range");
	/* Die with keyward. The parent's death before this line is seen as EOF
	 * on the control socket below. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		die_errno("PR_SET_PDEATHSIG");
	/* The network namespace is made here rather than by the clone: making
	 * one is most of a clone's cost, and here it overlaps with keyward's
	 * work instead of delaying it. Nothing before this line touches the
	 * network, and it needs no identity map (we hold every capability in
	 * the new user namespace already). */
	if (unshare(CLONE_NEWNET) < 0)
		die_errno("cannot create the sandbox's network namespace");
	/* Wait for the identity maps. */
	char maps = 0;
	if (recv_all(ctl_fd, &maps, 1) != 1 || maps != 'M')
		_exit(126); /* keyward went away */
	/* Only now: keyward, when not root, could not write our maps in
	 * /proc/PID once we are not dumpable. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die_errno("PR_SET_DUMPABLE");

	if (sethostname("sandbox", 7) < 0 || setdomainname("", 0) < 0)
		die_errno("cannot set the host name");
	int bundle = build_common();
	const struct sandbox_spec *spec = recv_spec(sb);
	finish_root(spec);
	uint16_t port;
	int door = open_door(&port);
	send_door(door, port);
	close(door);
	verbose(spec, "network: only lo; the proxy listens on 127.0.0.1:%u inside", (unsigned)port);

	struct envv env = { .n = 0 };
	build_env(spec, port, &env);
	/* CMD's arguments live in the area about to be wiped */
	if (spec->cmd <= 0 || spec->cmd >= sb->argc)
		die("no command");
	size_t argc = (size_t)(sb->argc - spec->cmd);
	char **cmd = calloc(argc + 1, sizeof(char *));
	for (size_t i = 0; cmd && i < argc; i++)
		if (!(cmd[i] = strdup(sb->argv[spec->cmd + (int)i])))
			die("out of memory");
	char *workspace = strdup(spec->workspace);
	if (!cmd || !workspace)
		die("out of memory");
	install_ca(spec, bundle);
	seal_root();
	wipe_inherited(sb->argc, sb->argv);
	set_limits(spec);
	drop_privileges();
	fences(spec, port);
	/* Out of keyward's process group, unless that is the terminal's
	 * foreground job: a kill(0, ...) from CMD then reaches the sandbox
	 * only, not keyward and the script that started it (Landlock's signal
	 * scoping, ABI 6, says the same where the kernel has it). */
	if (spec->own_group && setpgid(0, 0) < 0)
		die_errno("cannot make a process group for the sandbox");
	cmd_own_group = spec->own_group;
	munmap(sb->arena, sb->arena_size); /* keyward's to write; nothing more to read */
	join_then_wait_go();
	init_loop(workspace, cmd, env.v);
}

/* ---- parent ---- */

static int write_proc(pid_t pid, const char *file, const char *text, char *errbuf, size_t errlen)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		snprintf(errbuf, errlen, "cannot write %s: %s", path, strerror(e));
		return -e;
	}
	close(fd);
	return 0;
}

/* The arena: room for the spec, which holds at most a few dozen paths. */
#define ARENA_SIZE (1024 * 1024)

static int clone_error(struct sandbox *sb, int e, const char *what)
{
	snprintf(sb->clone_msg, sizeof(sb->clone_msg), "%s: %s", what, strerror(e));
	return sb->clone_err = -e;
}

int sandbox_clone(struct sandbox *sb, int argc, char **argv)
{
	int sv[2];
	*sb = (struct sandbox){ .pid = -1, .ctl = -1, .listen_fd = -1, .argc = argc, .argv = argv };
	for (size_t i = 0; i < ARRAY_SIZE(sb->join_fd); i++)
		sb->join_fd[i] = -1;
	char *errbuf = sb->clone_msg;
	size_t errlen = sizeof(sb->clone_msg);
	void *arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED)
		return clone_error(sb, errno, "cannot map the sandbox's configuration");
	sb->arena = arena;
	sb->arena_size = ARENA_SIZE;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return clone_error(sb, errno, "socketpair");
	fflush(NULL);
	const uint64_t flags =
	    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
	int cg = sandbox_cgroup_prepare(sb);
	long pid = -1;
	if (cg >= 0) {
		struct clone_args args = {
			.flags = flags | CLONE_INTO_CGROUP,
			.exit_signal = SIGCHLD,
			.cgroup = (uint64_t)cg,
		};
		pid = syscall(SYS_clone3, &args, sizeof(args));
		if (pid < 0) {
			/* no clone3 (before Linux 5.7, or a container's seccomp
			 * profile), or the cgroup refused: the usual clone, and
			 * the usual move into a cgroup later */
			(void)rmdir(sb->born_cgroup);
			sb->born_cgroup[0] = '\0';
			sb->warm_lock = true;
		}
		close(cg);
	}
	if (pid < 0)
		pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		snprintf(errbuf, errlen, "cannot create the sandbox's namespaces: %s%s", strerror(e),
		         e == EPERM || e == ENOSPC ? " (are unprivileged user namespaces enabled? see "
		                                     "/proc/sys/user/max_user_namespaces and "
		                                     "kernel.apparmor_restrict_unprivileged_userns)"
		                                   : "");
		return sb->clone_err = -e;
	}
	if (pid == 0) {
		close(sv[0]);
		ctl_fd = sv[1];
		child_main(sb);
	}
	close(sv[1]);
	sb->pid = (pid_t)pid;
	sb->ctl = sv[0];

	char map[64];
	int r = write_proc(sb->pid, "setgroups", "deny", errbuf, errlen);
	snprintf(map, sizeof(map), "%d %d 1\n", SANDBOX_UID, (int)getuid());
	if (r == 0)
		r = write_proc(sb->pid, "uid_map", map, errbuf, errlen);
	snprintf(map, sizeof(map), "%d %d 1\n", SANDBOX_GID, (int)getgid());
	if (r == 0)
		r = write_proc(sb->pid, "gid_map", map, errbuf, errlen);
	if (r == 0 && send(sb->ctl, "M", 1, MSG_NOSIGNAL) != 1) {
		snprintf(errbuf, errlen, "cannot start the sandbox: %s", strerror(errno));
		r = -EIO;
	}
	if (r < 0) {
		sandbox_kill(sb);
		close(sb->ctl);
		sb->ctl = -1;
		return sb->clone_err = r;
	}
	return 0;
}

void *sandbox_alloc(struct sandbox *sb, size_t n)
{
	size_t at = (sb->arena_used + 15) & ~(size_t)15;
	if (!sb->arena || n > sb->arena_size || at > sb->arena_size - n)
		return NULL;
	sb->arena_used = at + n;
	return memset(sb->arena + at, 0, n);
}

char *sandbox_strdup(struct sandbox *sb, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = sandbox_alloc(sb, n);
	return d ? memcpy(d, s, n) : NULL;
}

int sandbox_configure(struct sandbox *sb, const struct sandbox_spec *spec)
{
	char msg[1 + sizeof(void *)] = { 'C' };
	memcpy(msg + 1, &spec, sizeof(spec));
	if (send(sb->ctl, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
		return -errno; /* -EPIPE: the child has ended */
	return 0;
}

static int fail_child(struct sandbox *sb, int r)
{
	sandbox_kill(sb);
	return r;
}

/* PID 1's next message into mh's one buffer of MSG_MAX + 1 bytes (iov_len
 * MSG_MAX), ended by a NUL; an error, with PID 1's own reason when it gave
 * one ('E'). */
static int recv_ctl(struct sandbox *sb, struct msghdr *mh, char *errbuf, size_t errlen)
{
	char *msg = mh->msg_iov[0].iov_base;
	ssize_t n;
	bool reset = false;
	/* A child that ended with our CA unread in its queue makes the kernel
	 * report ECONNRESET once; its last message (why it ended) is still
	 * behind that. */
	do
		n = recvmsg(sb->ctl, mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && (errno == EINTR || (errno == ECONNRESET && !reset && (reset = true))));
	if (n <= 0) {
		snprintf(errbuf, errlen, "the sandbox ended while it was being built");
		return -EPIPE;
	}
	msg[n] = '\0';
	if (msg[0] == 'E') {
		snprintf(errbuf, errlen, "%s", msg + 1);
		return -EINVAL;
	}
	return 0;
}

static int recv_door(struct sandbox *sb, char *errbuf, size_t errlen)
{
	char msg[MSG_MAX + 1];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = msg, .iov_len = MSG_MAX };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	int r = recv_ctl(sb, &mh, errbuf, errlen);
	if (r < 0)
		return r;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	unsigned port = 0;
	if (msg[0] != 'K' || sscanf(msg + 1, "%u", &port) != 1 || port == 0 || port > 65535 || !cm ||
	    cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int))) {
		snprintf(errbuf, errlen, "the sandbox sent an unexpected message");
		return -EPROTO;
	}
	memcpy(&sb->listen_fd, CMSG_DATA(cm), sizeof(int));
	sb->port = (uint16_t)port;
	return 0;
}

int sandbox_send_ca(struct sandbox *sb, const char *ca_pem)
{
	size_t len = strlen(ca_pem);
	if (len == 0 || len > CA_MAX)
		return -EINVAL;
	ssize_t n = send(sb->ctl, ca_pem, len, MSG_NOSIGNAL);
	if (n < 0)
		return -errno; /* -EPIPE: the child has ended */
	return n == (ssize_t)len ? 0 : -EIO;
}

int sandbox_limit(struct sandbox *sb, const struct policy_sandbox *limits, bool verbose, char *errbuf, size_t errlen)
{
	int r = sandbox_cgroup_apply(sb, limits, verbose, errbuf, errlen);
	if (r < 0)
		return fail_child(sb, r);
	return 0;
}

/* Hands PID 1 the cgroup v1 `tasks` files to move itself into (see
 * join_then_wait_go) and waits for the outcome. */
static int join_cgroups(struct sandbox *sb, char *errbuf, size_t errlen)
{
	if (sb->n_join == 0)
		return 0;
	union {
		char buf[CMSG_SPACE(sizeof(sb->join_fd))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec iov = { .iov_base = "J", .iov_len = 1 };
	size_t fds_len = sb->n_join * sizeof(int);
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = CMSG_SPACE(fds_len)
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(fds_len);
	memcpy(CMSG_DATA(cm), sb->join_fd, fds_len);
	ssize_t sent = sendmsg(sb->ctl, &mh, MSG_NOSIGNAL);
	int e = errno;
	sandbox_cgroup_unjoin(sb); /* PID 1 has its own copies */
	char msg[MSG_MAX + 1];
	struct iovec reply = { .iov_base = msg, .iov_len = MSG_MAX };
	mh = (struct msghdr){ .msg_iov = &reply, .msg_iovlen = 1 };
	if (sent != 1) {
		snprintf(errbuf, errlen, "cannot move the sandbox into its cgroup: %s", strerror(e));
		/* PID 1 ended after its door (its fences failed): the reason it
		 * left, not the broken pipe, is what went wrong */
		if (e == EPIPE)
			(void)recv_ctl(sb, &mh, errbuf, errlen);
		return -e;
	}
	int r = recv_ctl(sb, &mh, errbuf, errlen);
	if (r < 0)
		return r;
	int err = -1;
	if (msg[0] != 'J' || sscanf(msg + 1, "%d", &err) != 1 || err < 0) {
		snprintf(errbuf, errlen, "the sandbox sent an unexpected message");
		return -EPROTO;
	}
	if (err == 0)
		return 0;
	if (sb->join_required) {
		snprintf(errbuf, errlen, "cannot move the sandbox into its cgroup %s: %s", sb->cgroup[0],
		         strerror(err));
		return -err;
	}
	if (sb->join_verbose)
		log_info("limits: cannot move the sandbox into cgroup v1 %s (%s), so no pids limit beyond the rlimits",
		         sb->cgroup[0], strerror(err));
	return 0;
}

int sandbox_finish(struct sandbox *sb, char *errbuf, size_t errlen)
{
	int r = recv_door(sb, errbuf, errlen);
	if (r == 0)
		r = join_cgroups(sb, errbuf, errlen);
	if (r == 0 && send(sb->ctl, "G", 1, MSG_NOSIGNAL) != 1) {
		snprintf(errbuf, errlen, "cannot start the sandbox: %s", strerror(errno));
		r = -EIO;
	}
	if (r < 0)
		return fail_child(sb, r);
	return 0;
}

void sandbox_kill(struct sandbox *sb)
{
	if (sb->pid > 0) {
		kill(sb->pid, SIGKILL);
		while (waitpid(sb->pid, NULL, 0) < 0 && errno == EINTR)
			;
		sb->pid = -1;
	}
}

void sandbox_cleanup(struct sandbox *sb)
{
	if (sb->ctl >= 0)
		close(sb->ctl);
	if (sb->listen_fd >= 0)
		close(sb->listen_fd);
	sb->ctl = sb->listen_fd = -1;
	sandbox_cgroup_remove(sb);
	if (sb->arena)
		munmap(sb->arena, sb->arena_size);
	sb->arena = NULL;
}

int sandbox_exit_code(int wstatus)
{
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	return 1;
}
