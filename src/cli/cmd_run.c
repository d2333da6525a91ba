/* `keyward run`: CMD in the namespace sandbox, its only way out the proxy.
 *
 * Order matters: the sandbox is cloned before any secret is loaded, and
 * the policy is read once, before CMD starts, so that CMD cannot change
 * the policy it runs under (it may live in the workspace). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cli/cli.h"
#include "common/log.h"
#include "audit/audit.h"
#include "common/state.h"
#include "secrets/exec.h"
#include "secrets/source.h"
#include "secrets/vault.h"
#include "policy/policy.h"
#include "policy/trust.h"
#include "proxy/proxy.h"
#include "proxy/tls.h"
#include "sandbox/sandbox.h"

/* Prints a message of a failed run: it may quote paths of the policy (a
 * hostile one's, with escape sequences), shown as text (log_clean). */
static void run_error(const char *msg)
{
	char line[2 * PATH_MAX + 512];
	snprintf(line, sizeof(line), "%s", msg);
	log_clean(line, strlen(line), "");
	fprintf(stderr, "keyward run: %s\n", line);
}

static const char usage[] = "Usage: keyward run [OPTIONS] [--] CMD [ARG]...\n"
                            "\n"
                            "Runs CMD in a fresh sandbox (user, mount, PID, network, IPC, UTS and cgroup\n"
                            "namespaces; Landlock; seccomp) whose only way out is keyward's proxy. CMD\n"
                            "sees placeholders, never secrets: the proxy attaches the real credential to\n"
                            "the requests the policy allows and refuses everything else. The sandbox sees\n"
                            "/usr, the parts of /etc programs need, the workspace (read-write), a private\n"
                            "/tmp and $HOME, and nothing else of the host. No root is needed.\n"
                            "\n"
                            "Options:\n"
                            "  -p, --policy FILE     the policy (YAML, see docs/policy.md); default\n"
                            "                        ./keyward.yaml if it exists, else no route at all\n"
                            "  -w, --workspace DIR   bound read-write at its own path, and CMD's working\n"
                            "                        directory (default: the policy's sandbox.workspace,\n"
                            "                        else the current directory)\n"
                            "  -a, --audit FILE      audit log (default: the policy's audit:, else\n"
                            "                        audit.jsonl in the state directory)\n"
                            "      --resolve HOST:ADDRESS\n"
                            "                        dial ADDRESS for HOST instead of asking DNS\n"
                            "                        (repeatable; for tests and internal hosts)\n"
                            "  -v, --verbose         explain what was set up (repeat for proxy debug)\n"
                            "  -h, --help            show this help\n"
                            "\n"
                            "Exit status: CMD's own, 128+N if it died of signal N; 125 if the sandbox\n"
                            "could not be set up; 2 for usage or policy errors.\n"
                            "Inside: HTTP(S)_PROXY and friends point at the proxy, SSL_CERT_FILE and\n"
                            "friends at a CA bundle that trusts keyward's per-run CA, each credential's\n"
                            "placeholder is in its env: variable. See docs/sandbox.md.\n"
                            "Hidden from CMD even inside the workspace: the policy file, its upstream_ca\n"
                            "files, the audit log, keyward's state directory and every file: credential.\n"
                            "keyward refuses to start when an exec: credential command names a file the\n"
                            "sandbox can write. A policy file that appears where the next run would read\n"
                            "it (./keyward.yaml, or in place of the policy) while CMD runs is renamed\n"
                            "NAME.untrusted-TIME when the run ends.\n";

static int load_policy(const char *path, struct policy **ret)
{
	struct policy_error perr;
	int r;
	if (path) {
		r = policy_load(path, ret, &perr);
	} else {
		static const char none[] = "version: 1\n";
		r = policy_load_string("(no policy: every request is refused)", none, sizeof(none) - 1, ret, &perr);
	}
	if (r < 0)
		fprintf(stderr, "%s\n", perr.message);
	return r;
}

/* The audit log the proxy will write, so that it can be hidden from the
 * sandbox wherever it lies. */
static int audit_path_for(const char *opt_audit, const struct policy *p, char *out, size_t outlen)
{
	char dir[PATH_MAX], err[512];
	if (opt_audit || p->audit) {
		snprintf(out, outlen, "%s", opt_audit ? opt_audit : p->audit);
		return 0;
	}
	int r = state_dir(dir, sizeof(dir), true, err, sizeof(err));
	if (r < 0) {
		run_error(err);
		return r;
	}
	snprintf(out, outlen, "%s/audit.jsonl", dir);
	return 0;
}

/* The absolute form of a path that may not exist yet (its folder must). */
static void absolute(const char *path, char *out, size_t outlen)
{
	char dir[PATH_MAX];
	if (realpath(path, out))
		return;
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	const char *base = path;
	if (slash) {
		*slash = '\0';
		base = slash + 1;
	}
	char rdir[PATH_MAX];
	if (realpath(slash ? (dir[0] ? dir : "/") : ".", rdir))
		snprintf(out, outlen, "%s/%s", streq(rdir, "/") ? "" : rdir, base);
	else
		snprintf(out, outlen, "%s", path);
}

/* What keyward does while the sandbox builds itself (on a thread started
 * after the clone: the child never holds the CA's key): the CA, whose
 * certificate the child waits for, first; then the audit log's last line,
 * which must be sound before CMD starts. The thread starts as soon as
 * `run` has read its options; the certificate is sent once the main thread
 * has sent the sandbox its spec, which the child reads first. What only
 * the proxy needs (the leaf key, the tunnels' TLS context) waits for the
 * first tunnel (proxy_server_ctx): made here in the background, it took
 * CPU time from PID 1 and CMD on a two-CPU machine, 0.7-0.9 ms of a
 * run's wall time (bench/README.md). */
struct ca_job {
	struct sandbox *sb;
	struct audit_log *log;
	struct tls_ca *ca;
	int r;
	bool audit_bad; /* r is audit_load's: a damaged or unreadable log */
	char err[1024];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int started; /* 0: the sandbox's spec is being made; 1: sent; -1: failed */
	bool ready;  /* r and err are final: CMD may start if r is 0 */
	pthread_t thread;
	bool threaded; /* the thread runs and is to be joined */
};

/* started: 1 or -1 as the spec was sent or not (0 leaves it); ready:
 * the outcome for the sandbox is known. */
static void job_set(struct ca_job *j, int started, bool ready)
{
	pthread_mutex_lock(&j->lock);
	if (started)
		j->started = started;
	if (ready)
		j->ready = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

/* Waits until the job's outcome for the sandbox is known. */
static void job_wait_ready(struct ca_job *j)
{
	pthread_mutex_lock(&j->lock);
	while (!j->ready)
		pthread_cond_wait(&j->cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
}

static void ca_steps(struct ca_job *j)
{
	_cleanup_free_ char *pem = NULL;
	j->r = tls_ca_new_ephemeral(&j->ca);
	if (j->r == 0 && !(pem = tls_ca_cert_pem(j->ca)))
		j->r = -ENOMEM;
	pthread_mutex_lock(&j->lock);
	while (j->started == 0)
		pthread_cond_wait(&j->cond, &j->lock);
	bool go = j->started > 0;
	pthread_mutex_unlock(&j->lock);
	if (!go) {
		j->r = -ECANCELED; /* the run stopped before CMD: the main thread says why */
		return;
	}
	if (j->r == 0)
		j->r = sandbox_send_ca(j->sb, pem);
	if (j->r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot create the CA of this run: %s", strerror(-j->r));
		return;
	}
	if ((j->r = audit_load(j->log, j->err, sizeof(j->err))) < 0) {
		j->audit_bad = true;
		if (!j->err[0])
			snprintf(j->err, sizeof(j->err), "%s", strerror(-j->r));
	}
}

static void *make_ca(void *arg)
{
	struct ca_job *j = arg;
	ca_steps(j);
	job_set(j, 0, true);
	return NULL;
}

/* Policy paths are relative to the policy's folder already; one loaded
 * from ./keyward.yaml may still be relative to the current directory.
 * Symbolic links are not resolved here: the sandbox refuses them. */
static int absolute_paths(struct policy_sandbox *sb)
{
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	for (size_t i = 0; i < sb->n_paths; i++) {
		char *p = sb->paths[i].path, *q;
		if (p[0] == '/')
			continue;
		if (asprintf(&q, "%s/%s", cwd, p) < 0)
			return -ENOMEM;
		free(p);
		sb->paths[i].path = q;
	}
	return 0;
}

/* Whether path is dir or lies beneath it (both absolute and canonical). */
static bool is_beneath(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (streq(dir, "/"))
		return true;
	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* The absolute path as it resolves: the real path of its deepest folder
 * that exists, then the rest as written (a folder that does not exist
 * yet may be made by the sandbox where that folder lies). False if even
 * "/" cannot be resolved or out is too small. */
static bool resolve_existing(const char *path, char *out, size_t outlen)
{
	char head[PATH_MAX];
	snprintf(head, sizeof(head), "%s", path);
	size_t cut = strlen(head);
	for (;;) {
		char real[PATH_MAX];
		if (realpath(cut ? head : "/", real)) {
			const char *rest = path + cut;
			int n = streq(real, "/") && *rest ? snprintf(out, outlen, "%s", rest)
			                                  : snprintf(out, outlen, "%s%s", real, rest);
			return n > 0 && (size_t)n < outlen;
		}
		char *slash = strrchr(head, '/');
		if (!slash)
			return false;
		*slash = '\0';
		cut = (size_t)(slash - head);
	}
}

/* The real paths of sb's read_write paths (those that exist), into rw;
 * their number. free_dirs frees them. */
static size_t writable_dirs(const struct policy_sandbox *sb, const char **rw)
{
	size_t n_rw = 0;
	for (size_t k = 0; k < sb->n_paths && n_rw < SANDBOX_MAX_PATHS; k++)
		if (sb->paths[k].write && (rw[n_rw] = realpath(sb->paths[k].path, NULL)))
			n_rw++;
	return n_rw;
}

static void free_dirs(const char **rw, size_t n_rw)
{
	while (n_rw)
		free((char *)rw[--n_rw]);
}

/* Whether the real path abs lies in the workspace or one of the rw. */
static bool lies_writable(const char *abs, const char *ws, const char *const *rw, size_t n_rw)
{
	bool beneath = is_beneath(abs, ws);
	for (size_t k = 0; !beneath && k < n_rw; k++)
		beneath = is_beneath(abs, rw[k]);
	return beneath;
}

/* Whether s, a value of an environment variable, names a place the
 * sandbox can write: holds the workspace or a read_write path as a whole
 * path (followed by '/', ':', a space, a quote or the end), or has an
 * absolute entry or word (split at ':', blanks, quotes, '=', ',' and ';')
 * that resolves there (a link to it). */
static bool names_writable(const char *s, const char *ws, const char *const *rw, size_t n_rw)
{
	for (size_t k = 0; k <= n_rw; k++) {
		const char *dir = k == 0 ? ws : rw[k - 1];
		size_t dl = strlen(dir);
		for (const char *p = strstr(s, dir); dl && p; p = strstr(p + 1, dir)) {
			char after = p[dl];
			if (after == '\0' || after == '/' || after == ':' || after == ' ' || after == '"' ||
			    after == '\'')
				return true;
		}
	}
	/* Entries of a list (PATH), words of options (NODE_OPTIONS'
	 * --require=/x/y.js, PERL5OPT's -I/x/lib): whatever follows a
	 * separator and starts with '/', or with an option's dash and letters
	 * before its '/', is looked at as a path, through links. */
	static const char seps[] = ": \t\"'=,;";
	char entry[PATH_MAX], real[PATH_MAX];
	for (const char *p = s; *p;) {
		size_t len = strcspn(p, seps);
		/* an option with its path attached: -I/x/lib (PERL5OPT, RUBYOPT) */
		const char *w = p;
		size_t wl = len;
		const char *sl = p[0] == '-' ? memchr(p, '/', len) : NULL;
		if (sl) {
			wl -= (size_t)(sl - p);
			w = sl;
		}
		if (w[0] == '/' && wl < sizeof(entry)) {
			memcpy(entry, w, wl);
			entry[wl] = '\0';
			if (resolve_existing(entry, real, sizeof(real)) && lies_writable(real, ws, rw, n_rw))
				return true;
		}
		p += len + (p[len] != '\0');
	}
	return false;
}

/* Adds the canonical path of the CA file path (if any) to hide, unless it
 * lies where the sandbox cannot write (ws, rw) or is there already. */
static void hide_writable_ca(const char *path, const char *ws, const char *const *rw, size_t n_rw, const char **hide,
                             size_t *n_hide, char *slot)
{
	if (!path)
		return;
	absolute(path, slot, PATH_MAX);
	if (!lies_writable(slot, ws, rw, n_rw))
		return;
	for (size_t k = 0; k < *n_hide; k++)
		if (streq(hide[k], slot))
			return;
	hide[(*n_hide)++] = slot;
}

/* Whether the shell command cmd names a place the sandbox can write: any
 * word of it that is an absolute path there (names_writable). Words are
 * split loosely, at blanks, quotes, '=' and the shell's operators: a
 * false alarm refuses a run, a miss would run the sandbox's code. */
static bool command_names_writable(const char *cmd, const char *ws, const struct policy_sandbox *sb)
{
	const char *rw[SANDBOX_MAX_PATHS];
	size_t n_rw = writable_dirs(sb, rw);
	bool found = false;
	char word[PATH_MAX];
	for (const char *p = cmd; *p && !found;) {
		size_t len = strcspn(p, " \t\n'\"=;|&()<>`$");
		if (len > 0 && len < sizeof(word) && p[0] == '/') {
			memcpy(word, p, len);
			word[len] = '\0';
			found = names_writable(word, ws, rw, n_rw);
		}
		p += len + (p[len] != '\0');
	}
	free_dirs(rw, n_rw);
	return found;
}

/* Appends ", " (but first), what and name[0..n) to list, cut at its size. */
static void note_dropped(char *list, size_t size, size_t *used, const char *what, const char *name, size_t n)
{
	if (*used + 1 >= size)
		return;
	int k = snprintf(list + *used, size - *used, "%s%s%.*s", *used ? ", " : "", what, (int)n, name);
	if (k > 0)
		*used = *used + (size_t)k < size ? *used + (size_t)k : size - 1;
}

/* The environment for credential commands (exec: sources), which run
 * outside the sandbox, with keyward's rights, while it runs and at the
 * next start: keyward's own, less what the sandbox could fill with code
 * of its choosing. A PATH entry in the workspace (an activated virtualenv,
 * a project's bin/) would run a program the sandbox put there in place of
 * the command's; PYTHONPATH, NODE_OPTIONS, LD_PRELOAD, BASH_ENV,
 * AWS_CONFIG_FILE (credential_process), KUBECONFIG... the same through
 * other doors. PATH keeps its other entries; any other variable that
 * names such a place is left out. Entries that are relative or empty
 * stay: commands run in "/". Returns the new array (for the process's
 * life) with the names it left out in dropped, or NULL. */
static char **confined_environ(const char *ws, const struct policy_sandbox *sb, char *dropped, size_t droppedlen)
{
	extern char **environ;
	const char *rw[SANDBOX_MAX_PATHS];
	size_t n_rw = writable_dirs(sb, rw), n = 0, used = 0;
	while (environ[n])
		n++;
	char **out = calloc(n + 1, sizeof(*out));
	if (!out) {
		free_dirs(rw, n_rw);
		return NULL;
	}
	dropped[0] = '\0';
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		if (!eq)
			continue;
		if ((size_t)(eq - environ[i]) == 4 && strncmp(environ[i], "PATH", 4) == 0) {
			/* the entries that name no such place, in their order */
			char *path = malloc(strlen(environ[i]) + 1), *w = path;
			if (!path) {
				free(out);
				out = NULL;
				break;
			}
			w = mempcpy(w, "PATH=", 5);
			bool first = true;
			for (const char *p = eq + 1;;) {
				size_t len = strcspn(p, ":");
				char entry[PATH_MAX];
				bool keep = len >= sizeof(entry);
				if (!keep) {
					memcpy(entry, p, len);
					entry[len] = '\0';
					keep = !names_writable(entry, ws, rw, n_rw);
				}
				if (keep) {
					if (!first)
						*w++ = ':';
					w = mempcpy(w, p, len);
					first = false;
				} else {
					note_dropped(dropped, droppedlen, &used, "PATH entry ", entry, strlen(entry));
				}
				if (!p[len])
					break;
				p += len + 1;
			}
			*w = '\0';
			out[j++] = path;
			continue;
		}
		if (names_writable(eq + 1, ws, rw, n_rw)) {
			/* the shell's record of the folder keyward was started in,
			 * usually the workspace: left out without a word (commands
			 * run in "/") */
			size_t nl = (size_t)(eq - environ[i]);
			bool cwd = (nl == 3 && strncmp(environ[i], "PWD", 3) == 0) ||
			           (nl == 6 && strncmp(environ[i], "OLDPWD", 6) == 0);
			if (!cwd)
				note_dropped(dropped, droppedlen, &used, "", environ[i], nl);
			continue;
		}
		out[j++] = environ[i];
	}
	free_dirs(rw, n_rw);
	return out;
}

/* The first symbolic link on path (absolute) that lies in a folder the
 * sandbox can write (the workspace or a read_write path), copied into out;
 * false if there is none. Such a link may have been planted by an earlier
 * run: a secret read through it would be whatever file that run chose
 * (another credential's token, a vault of its own). */
static bool planted_link(const char *path, const char *ws, const struct policy_sandbox *sb, char *out, size_t outlen)
{
	char prefix[PATH_MAX], parent[PATH_MAX];
	size_t n = strlen(path);
	if (path[0] != '/' || n >= sizeof(prefix))
		return false;
	for (size_t i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		memcpy(prefix, path, i);
		prefix[i] = '\0';
		struct stat st;
		if (lstat(prefix, &st) < 0)
			return false; /* what is missing holds no link */
		if (!S_ISLNK(st.st_mode))
			continue;
		char *slash = strrchr(prefix, '/');
		*slash = '\0';
		bool writable = false;
		if (realpath(slash == prefix ? "/" : prefix, parent)) {
			writable = is_beneath(parent, ws);
			char rw[PATH_MAX]; /* as written in the policy: "/x/cache/", "/x/./cache" */
			for (size_t k = 0; !writable && k < sb->n_paths; k++)
				writable =
				    sb->paths[k].write && realpath(sb->paths[k].path, rw) && is_beneath(parent, rw);
		}
		*slash = '/';
		if (writable) {
			snprintf(out, outlen, "%s", prefix);
			return true;
		}
	}
	return false;
}

/* Whether the caller's home directory is ws or lies beneath it. */
static bool contains_home(const char *ws)
{
	const char *home = getenv("HOME");
	char real[PATH_MAX];
	if (!home || !*home || !realpath(home, real))
		return false;
	size_t n = strlen(ws);
	return strncmp(real, ws, n) == 0 && (real[n] == '\0' || real[n] == '/');
}

static int run(struct proxy_options o, const char *policy_path, const char *workspace, int verbose, char **cmd,
               struct sandbox *sb, struct ca_job *job);

/* What PID 1 needs, copied into the memory it shares with us; NULL when it
 * does not fit. cmd points into keyward's own argv, which PID 1 has a copy
 * of (getopt stops at the first operand: "+" in cmd_run's option string,
 * so nothing was moved). */
static struct sandbox_spec *make_spec(struct sandbox *sb, const struct policy *p, const char *ws,
                                      const char *const *hide, size_t n_hide, char **cmd, bool verbose)
{
	struct sandbox_spec *spec = sandbox_alloc(sb, sizeof(*spec));
	if (!spec || !(spec->workspace = sandbox_strdup(sb, ws)))
		return NULL;
	spec->verbose = verbose;
	spec->own_group = sandbox_own_group();
	spec->cmd = (int)(cmd - sb->argv);
	spec->sb = p->sandbox;
	spec->sb.workspace = NULL;
	spec->sb.paths = NULL;
	spec->sb.env = NULL;
	size_t n = p->sandbox.n_paths;
	if (n) {
		struct policy_sandbox_path *paths = sandbox_alloc(sb, n * sizeof(*paths));
		if (!paths)
			return NULL;
		for (size_t i = 0; i < n; i++) {
			paths[i] = p->sandbox.paths[i];
			if (!(paths[i].path = sandbox_strdup(sb, p->sandbox.paths[i].path)))
				return NULL;
		}
		spec->sb.paths = paths;
	}
	n = 0;
	for (char **e = p->sandbox.env; e && *e; e++)
		n++;
	if (n) {
		char **env = sandbox_alloc(sb, (n + 1) * sizeof(*env));
		if (!env)
			return NULL;
		for (size_t i = 0; i < n; i++)
			if (!(env[i] = sandbox_strdup(sb, p->sandbox.env[i])))
				return NULL;
		spec->sb.env = env;
	}
	const char **cred_env = sandbox_alloc(sb, (2 * p->n_creds + 1) * sizeof(*cred_env));
	const char **h = sandbox_alloc(sb, (n_hide + 1) * sizeof(*h));
	if (!cred_env || !h)
		return NULL;
	n = 0;
	for (size_t i = 0; i < p->n_creds; i++) {
		if (!p->creds[i].env)
			continue;
		if (!(cred_env[n++] = sandbox_strdup(sb, p->creds[i].env)) ||
		    !(cred_env[n++] = sandbox_strdup(sb, p->creds[i].placeholder)))
			return NULL;
	}
	spec->cred_env = cred_env;
	for (size_t i = 0; i < n_hide; i++)
		if (!(h[i] = sandbox_strdup(sb, hide[i])))
			return NULL;
	spec->hide = h;
	spec->n_hide = n_hide;
	return spec;
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "workspace", required_argument, NULL, 'w' },
		{ "audit", required_argument, NULL, 'a' },
		{ "resolve", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct proxy_options o = { .door = true };
	const char *policy_path = NULL, *workspace = NULL;
	int verbose = 0, c;

	while ((c = getopt_long(argc, argv, "+p:w:a:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			policy_path = optarg;
			break;
		case 'w':
			workspace = optarg;
			break;
		case 'a':
			o.audit_path = optarg;
			break;
		case 'r':
			if (!cli_add_resolve(&o, optarg, "run"))
				return 2;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs("see: keyward run --help\n", stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "keyward run: no command given (keyward run [OPTIONS] -- CMD [ARG]...)\n");
		return 2;
	}
	log_set_level(verbose >= 2 ? LOG_DEBUG : verbose == 1 ? LOG_INFO : LOG_WARN);

	/* The sandbox was cloned as keyward started (launch.c); when it was
	 * not, now, before any other thread exists. */
	struct sandbox own, *sb = cli_sandbox;
	if (!sb) {
		sb = &own;
		(void)sandbox_clone(sb, cli_argc, cli_argv);
	}
	/* The CA is made from the start (the first use of OpenSSL in a process
	 * takes milliseconds), while the policy is read and the sandbox
	 * builds itself; it is sent once the sandbox has its spec. The thread
	 * takes no signal: until the proxy handles them they stay blocked. */
	struct ca_job job = { .sb = sb, .r = -ENOMEM };
	pthread_mutex_init(&job.lock, NULL);
	pthread_cond_init(&job.cond, NULL);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	job.threaded = pthread_create(&job.thread, NULL, make_ca, &job) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	int rc = run(o, policy_path, workspace, verbose, argv + optind, sb, &job);
	if (job.threaded) {
		job_set(&job, -1, false); /* a run that stopped early: nothing to send */
		pthread_join(job.thread, NULL);
	}
	pthread_cond_destroy(&job.cond);
	pthread_mutex_destroy(&job.lock);
	tls_ca_free(job.ca);
	sandbox_kill(sb); /* still there: the run stopped before CMD */
	sandbox_cleanup(sb);
	return rc;
}

/* Whether the policy file path may be taken: not one a sandbox may have
 * written (trust.h). Says why not. */
static bool policy_trusted(const char *path)
{
	char state[PATH_MAX], why[2 * PATH_MAX + 512] = "";
	if (state_dir(state, sizeof(state), true, why, sizeof(why)) < 0 ||
	    trust_check(state, path, why, sizeof(why)) < 0) {
		run_error(why);
		return false;
	}
	return true;
}

/* Everything after the options: the policy, the sandbox, the proxy. */
static int run(struct proxy_options o, const char *policy_path, const char *workspace, int verbose, char **cmd,
               struct sandbox *sb, struct ca_job *job)
{
	struct stat st;
	if (!policy_path && stat("keyward.yaml", &st) == 0)
		policy_path = "keyward.yaml";
	if (policy_path && !policy_trusted(policy_path))
		return 2;
	struct policy *policy;
	if (load_policy(policy_path, &policy) < 0)
		return 2;
	if (verbose)
		log_info("policy %s: %zu routes, %zu credentials",
		         policy_path ? policy_path : "(none): every request is refused", policy->n_routes,
		         policy->n_creds);

	char ws[PATH_MAX], audit[PATH_MAX], audit_abs[PATH_MAX], state[PATH_MAX], err[1024] = "";
	const char *ws_arg = workspace ? workspace : policy->sandbox.workspace ? policy->sandbox.workspace : ".";
	if (!realpath(ws_arg, ws) || stat(ws, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, sizeof(err), "workspace %s: %s", ws_arg, errno ? strerror(errno) : "not a directory");
		run_error(err);
		policy_free(policy);
		return 2;
	}
	const char *kfs = kernel_fs_of(ws);
	if (kfs) {
		fprintf(stderr,
		        "keyward run: the workspace %s is in the host's %s; the sandbox has its own %s, and "
		        "binding the host's would let it change the host's kernel settings or devices\n",
		        ws, kfs, kfs);
		policy_free(policy);
		return 2;
	}
	if (streq(ws, "/") || contains_home(ws)) {
		fprintf(
		    stderr,
		    "keyward run: the workspace %s %s; run keyward in a project directory or pass --workspace DIR\n",
		    ws,
		    streq(ws, "/") ? "is / (the sandbox would see the whole host)"
		                   : "holds your home directory (~/.ssh, credentials, history)");
		policy_free(policy);
		return 2;
	}
	if (audit_path_for(o.audit_path, policy, audit, sizeof(audit)) < 0 ||
	    state_dir(state, sizeof(state), true, err, sizeof(err)) < 0) {
		if (err[0])
			run_error(err);
		policy_free(policy);
		return 1;
	}
	/* What would stop the proxy from starting is checked before CMD runs. */
	/* read now, before CMD exists, and never again (proxy_read_cas) */
	if (proxy_read_cas(policy, err, sizeof(err)) < 0) {
		run_error(err);
		policy_free(policy);
		return 2;
	}
	absolute(audit, audit_abs, sizeof(audit_abs));
	/* Opened (created) and locked now, before the sandbox exists: it is
	 * then hidden from the sandbox wherever it lies, and no later path
	 * lookup can be redirected by a sandbox that renames a folder of the
	 * workspace. Its last line is read while the sandbox builds itself. */
	struct audit_log *log = NULL;
	if (audit_reserve(audit_abs, &log, err, sizeof(err)) < 0) {
		run_error(err);
		policy_free(policy);
		return 1;
	}
	if (absolute_paths(&policy->sandbox) < 0) {
		fprintf(stderr, "keyward run: out of memory\n");
		audit_close(log);
		policy_free(policy);
		return 1;
	}
	/* The passphrase file of a passphrase vault (docs/vault.md) is as
	 * secret as the vault's key, wherever the user keeps it. */
	/* So is every file a credential is read from (file:PATH), e.g. a
	 * token file kept next to a policy in the workspace. */
	size_t n_cas = 1 + policy->n_routes + policy->n_creds;
	_cleanup_free_ const char **hide = calloc(4 + policy->n_creds + n_cas, sizeof(*hide));
	_cleanup_free_ char *cred_abs = calloc(policy->n_creds + 1, PATH_MAX);
	_cleanup_free_ char *ca_abs = calloc(n_cas, PATH_MAX);
	if (!hide || !cred_abs || !ca_abs) {
		fprintf(stderr, "keyward run: out of memory\n");
		audit_close(log);
		policy_free(policy);
		return 1;
	}
	/* Secrets are read through the paths the user gave; none may pass
	 * through a link that a sandbox could have left in its workspace. */
	const char *secret_paths[2] = { state, getenv(VAULT_PASSPHRASE_ENV) };
	char link[PATH_MAX], abs_path[PATH_MAX];
	for (size_t i = 0; i < 2 + policy->n_creds; i++) {
		const char *p = i < 2                                        ? secret_paths[i]
		                : policy->creds[i - 2].source == SOURCE_FILE ? policy->creds[i - 2].source_arg
		                                                             : NULL;
		if (!p || !*p)
			continue;
		if (p[0] != '/') {
			char cwd[PATH_MAX];
			if (!getcwd(cwd, sizeof(cwd)))
				continue;
			snprintf(abs_path, sizeof(abs_path), "%s/%s", cwd, p);
			p = abs_path;
		}
		if (planted_link(p, ws, &policy->sandbox, link, sizeof(link))) {
			fprintf(stderr,
			        "keyward run: %s passes through the symbolic link %s, which lies where the sandbox "
			        "can write (an earlier run may have made it); name the secret by its real path\n",
			        p, link);
			audit_close(log);
			policy_free(policy);
			return 2;
		}
	}
	/* A credential command is run on the host, now and while CMD runs: a
	 * script it names in the workspace (/project/bin/token.sh) is whatever
	 * CMD, or an earlier run, made of it. */
	for (size_t i = 0; i < policy->n_creds; i++) {
		if (policy->creds[i].source != SOURCE_EXEC ||
		    !command_names_writable(policy->creds[i].source_arg, ws, &policy->sandbox))
			continue;
		snprintf(err, sizeof(err),
		         "credential %s: its exec: command names a file where the sandbox can write (the workspace "
		         "or a read_write path), which the sandbox could replace with a program of its own; keep "
		         "what the command runs or reads elsewhere",
		         policy->creds[i].name);
		run_error(err);
		audit_close(log);
		policy_free(policy);
		return 2;
	}
	size_t n_hide = 0;
	/* Canonical, as every path hidden: a relative KEYWARD_HOME, or one
	 * reached through a link, must still cover the vault itself. */
	char state_abs[PATH_MAX];
	absolute(state, state_abs, sizeof(state_abs));
	hide[n_hide++] = state_abs;
	hide[n_hide++] = audit_abs;
	char pass_abs[PATH_MAX];
	const char *pass = getenv(VAULT_PASSPHRASE_ENV);
	if (pass && *pass) {
		absolute(pass, pass_abs, sizeof(pass_abs));
		hide[n_hide++] = pass_abs;
	}
	for (size_t i = 0; i < policy->n_creds; i++) {
		if (policy->creds[i].source != SOURCE_FILE)
			continue;
		char *abs = cred_abs + i * PATH_MAX;
		absolute(policy->creds[i].source_arg, abs, PATH_MAX);
		hide[n_hide++] = abs;
	}
	/* The policy itself, usually ./keyward.yaml in the workspace: read
	 * once for this run, but the next run reads it again, and CMD could
	 * have rewritten it in between (an exec: command of its choosing runs
	 * on the host then, its routes send credentials anywhere). Covered,
	 * it can be neither changed nor renamed nor removed (a mount point). A
	 * second name (a hard link) would let CMD write it all the same. */
	char policy_abs[PATH_MAX];
	if (policy_path) {
		absolute(policy_path, policy_abs, sizeof(policy_abs));
		struct stat pst;
		if (stat(policy_abs, &pst) == 0 && pst.st_nlink > 1) {
			snprintf(
			    err, sizeof(err),
			    "the policy %s has %ju names (hard links): the sandbox could change it through another "
			    "one for the next run; keep one name",
			    policy_abs, (uintmax_t)pst.st_nlink);
			run_error(err);
			audit_close(log);
			policy_free(policy);
			return 2;
		}
		hide[n_hide++] = policy_abs;
	}
	/* The upstream_ca files too, where the sandbox can write: read for
	 * this run before CMD starts, but again by the next run, which would
	 * trust a CA that CMD put there for the upstreams that carry the
	 * credentials. Elsewhere (the system's folders) they stay visible. */
	const char *rw[1 + SANDBOX_MAX_PATHS];
	size_t n_rw = writable_dirs(&policy->sandbox, rw + 1);
	hide_writable_ca(policy->upstream_ca, ws, rw + 1, n_rw, hide, &n_hide, ca_abs);
	for (size_t i = 0; i < policy->n_routes; i++)
		hide_writable_ca(policy->routes[i].upstream_ca, ws, rw + 1, n_rw, hide, &n_hide,
		                 ca_abs + (1 + i) * PATH_MAX);
	for (size_t i = 0; i < policy->n_creds; i++)
		if (policy->creds[i].mint)
			hide_writable_ca(policy->creds[i].mint->upstream_ca, ws, rw + 1, n_rw, hide, &n_hide,
			                 ca_abs + (1 + policy->n_routes + i) * PATH_MAX);
	/* From here until the sandbox is gone, a file under these may be
	 * CMD's: noted for the policy checks of later runs (trust.h). */
	struct trust_run trail;
	rw[0] = ws;
	int tr = trust_sandbox_note(&trail, rw, 1 + n_rw);
	free_dirs(rw + 1, n_rw);
	if (tr < 0) {
		fprintf(stderr, "keyward run: out of memory\n");
		audit_close(log);
		policy_free(policy);
		return 1;
	}
	/* Those files, the vault and the passphrase file are re-read while
	 * CMD runs (rotation), and may lie in folders CMD can rename: their
	 * folders are opened now, before CMD exists, and the reads go through
	 * them (source.h), so that CMD cannot swap in another file. */
	struct source_pin *pins = NULL;
	if (source_pins_open(policy, &pins) < 0) {
		fprintf(stderr, "keyward run: out of memory\n");
		audit_close(log);
		trust_sandbox_end(&trail);
		policy_free(policy);
		return 1;
	}
	vault_pin();

	if (sb->clone_err < 0) {
		run_error(sb->clone_msg);
		audit_close(log);
		source_pins_free(pins, policy->n_creds);
		trust_sandbox_end(&trail);
		policy_free(policy);
		return EXIT_SETUP;
	}
	struct sandbox_spec *spec = make_spec(sb, policy, ws, hide, n_hide, cmd, verbose > 0);
	if (!spec) {
		fprintf(stderr, "keyward run: the sandbox's configuration does not fit in %zu bytes\n", sb->arena_size);
		audit_close(log);
		source_pins_free(pins, policy->n_creds);
		trust_sandbox_end(&trail);
		policy_free(policy);
		return EXIT_SETUP;
	}
	/* Until the proxy watches them, signals must not kill us before the
	 * sandbox is cleaned up; the proxy passes them on. */
	sigset_t block, old;
	sigemptyset(&block);
	for (int s = 1; s < 32; s++)
		if (s != SIGKILL && s != SIGSTOP && s != SIGSEGV && s != SIGBUS && s != SIGFPE && s != SIGILL &&
		    s != SIGABRT && s != SIGTRAP)
			sigaddset(&block, s);
	sigprocmask(SIG_BLOCK, &block, &old);

	/* The CA is sent, and the audit log's last line read, while the
	 * sandbox is built and moved into its cgroup. */
	job->log = log; /* read by the thread once it is told to go on */
	int r = sandbox_configure(sb, spec);
	if (r < 0) {
		/* PID 1 ended while it built what every sandbox has: its own
		 * message says why */
		char why[sizeof(err)] = "";
		if (sandbox_finish(sb, why, sizeof(why)) < 0 && why[0])
			snprintf(err, sizeof(err), "%s", why);
		else
			snprintf(err, sizeof(err), "cannot start the sandbox: %s", strerror(-r));
	}
	job_set(job, r == 0 ? 1 : -1, false);
	if (r == 0 && !job->threaded)
		make_ca(job);
	if (r == 0)
		r = sandbox_limit(sb, &policy->sandbox, verbose > 0, err, sizeof(err));
	if (r == 0 && (r = trust_sandbox_begin(&trail, state, err, sizeof(err))) < 0)
		sandbox_kill(sb);
	/* Only the outcome for the sandbox is waited for here; the thread's
	 * last steps overlap the end of PID 1's set-up and the go. */
	if (job->threaded && r == 0) {
		job_wait_ready(job);
	} else if (job->threaded) {
		pthread_join(job->thread, NULL);
		job->threaded = false;
	}
	bool audit_bad = false;
	if (r == 0 && job->r < 0) {
		audit_bad = job->audit_bad;
		snprintf(err, sizeof(err), "%s", job->err);
		/* PID 1 ended before it took the CA: its own message says why (it
		 * cannot have sent its door, which comes after the CA). */
		char why[sizeof(err)] = "";
		if (job->r == -EPIPE && sandbox_finish(sb, why, sizeof(why)) < 0 && why[0])
			snprintf(err, sizeof(err), "%s", why);
		sandbox_kill(sb);
		r = job->r;
	}
	char **cmd_env = NULL, dropped[1024] = "";
	bool has_exec = false;
	for (size_t i = 0; i < policy->n_creds; i++)
		has_exec = has_exec || policy->creds[i].source == SOURCE_EXEC;
	if (r == 0 && has_exec && !(cmd_env = confined_environ(ws, &policy->sandbox, dropped, sizeof(dropped)))) {
		snprintf(err, sizeof(err), "out of memory");
		sandbox_kill(sb);
		r = -ENOMEM;
	}
	if (r == 0)
		r = sandbox_finish(sb, err, sizeof(err));
	if (job->threaded) {
		pthread_join(job->thread, NULL);
		job->threaded = false;
	}
	if (r < 0) {
		run_error(err);
		free(cmd_env);
		sandbox_cleanup(sb);
		trust_sandbox_end(&trail); /* PID 1 is gone */
		audit_close(log);
		source_pins_free(pins, policy->n_creds);
		policy_free(policy);
		sigprocmask(SIG_SETMASK, &old, NULL);
		return audit_bad ? 1 : EXIT_SETUP; /* as when the log cannot be opened */
	}

	char door[64];
	snprintf(door, sizeof(door), "sandbox:%d", (int)sb->pid);
	int status = -1;
	/* Credential commands run from here on (the proxy reads the secrets):
	 * never with a variable that points into what the sandbox writes. */
	exec_set_environ(cmd_env);
	if (dropped[0])
		log_warn("credential commands run without what names a place the sandbox writes: %s", dropped);
	o.policy = policy; /* taken over by the proxy */
	o.pins = pins;     /* too */
	o.policy_path = policy_path ? policy_path : "(none)";
	o.door_fd = sb->listen_fd;
	o.door_name = door;
	o.ca = job->ca; /* borrowed; freed by cmd_run */
	o.child = sb->pid;
	o.child_own_group = spec->own_group;
	o.child_status = &status;
	o.child_notice = sb->ctl;
	o.workers = 1;
	o.audit = log; /* taken over too */
	o.audit_path = audit_abs;
	o.restore_mask = &old; /* signals stay blocked until the proxy handles them */
	r = proxy_main(&o);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (status == -1) {
		/* The proxy could not start (or stopped first): the sandbox must
		 * not outlive it. */
		kill(sb->pid, SIGKILL);
		while (waitpid(sb->pid, &status, 0) < 0 && errno == EINTR)
			;
		if (r < 0)
			status = -1;
	}
	sb->pid = -1; /* reaped */
	sandbox_cleanup(sb);
	trust_sandbox_end(&trail); /* PID 1 is gone */
	if (status == -1)
		return EXIT_SETUP;
	return sandbox_exit_code(status);
}
