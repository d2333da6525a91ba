/* Whether a policy file is the user's, not a sandbox's (see trust.h).
 *
 * The trail holds one JSON object per line: a sandbox that may write from
 * now on,
 *   {"run":"ID","from":NS,"pid":PID,"started":TICKS,"boot":"UUID",
 *    "write":[ROOT,...],"ids":[[DEV,INO],...]}
 * and, once it can write no more, {"run":"ID","to":NS} (NS: nanoseconds of
 * the real-time clock). A run whose end is missing was killed, or still
 * runs: keyward's process (PID with that start time, in this boot) tells
 * which; a dead one is taken to have written until it is found dead, and
 * that end is added. The pins file holds
 *   {"name":ABSNAME,"dev":D,"ino":I,"ctime":NS}
 * per file taken, the last line for a name counting. Both are appended to
 * with O_APPEND, so concurrent runs do not mix their lines. */
#include "policy/trust.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "common/buf.h"

/* A clock step back during a run could give what CMD writes a time before
 * the run's start: the window opens this much earlier. */
#define SLACK_NS INT64_C(1000000000)

#define MAX_LINKS   40
#define MAX_OBJECTS 256
/* Ceilings of what is read: a trail of about 150 bytes a run. */
#define TRAIL_MAX (64u << 20)
#define PINS_MAX  (16u << 20)

static int64_t ns_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return ns_of(&ts);
}

static void join_path(char *out, size_t outlen, const char *dir, const char *name)
{
	snprintf(out, outlen, "%s/%s", streq(dir, "/") ? "" : dir, name);
}

/* This boot's id, and the start time (clock ticks after boot) of process
 * pid, from /proc: with the PID they name one process for good. */
static bool boot_id(char *out, size_t outlen)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	bool ok = f && fgets(out, (int)outlen, f);
	if (f)
		fclose(f);
	if (ok)
		out[strcspn(out, "\n")] = '\0';
	return ok && out[0];
}

static long long process_started(pid_t pid)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	/* after the command name, which may hold anything: its last ')' */
	char *p = strrchr(line, ')');
	long long started = -1;
	/* fields 3.. follow; the start time is field 22 */
	for (int field = 2; p && *p; p++)
		if (*p == ' ' && ++field == 22) {
			started = strtoll(p + 1, NULL, 10);
			break;
		}
	return started;
}

/* Appends line and a newline in one write(2): O_APPEND keeps the lines of
 * concurrent writers whole. */
static int append_line(int fd, const char *line)
{
	size_t len = strlen(line);
	char *copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, line, len);
	copy[len] = '\n';
	ssize_t w = write(fd, copy, len + 1);
	int e = errno;
	free(copy);
	if (w < 0)
		return -e;
	return w == (ssize_t)(len + 1) ? 0 : -EIO;
}

static int append_json(int fd, json_t *obj)
{
	char *line = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!line)
		return -ENOMEM;
	int r = append_line(fd, line);
	free(line);
	return r;
}

static int open_in(const char *state, const char *file, int flags)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", state, file) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
	return fd < 0 ? -errno : fd;
}

int trust_sandbox_note(struct trust_run *t, const char *const *roots, size_t n)
{
	char boot[64] = "";
	uint64_t tag = 0;
	*t = (struct trust_run){ .fd = -1 };
	(void)boot_id(boot, sizeof(boot));
	if (getrandom(&tag, sizeof(tag), 0) != sizeof(tag))
		tag = (uint64_t)now_ns(CLOCK_MONOTONIC);
	snprintf(t->id, sizeof(t->id), "%d-%016llx", (int)getpid(), (unsigned long long)tag);
	/* Each root by its path and by its device and inode, which a bind
	 * mount of it elsewhere (another name for the same files) shares. */
	json_t *write_to = json_array(), *ids = json_array();
	for (size_t i = 0; write_to && ids && i < n; i++) {
		struct stat st;
		bool ok = stat(roots[i], &st) == 0;
		json_array_append_new(write_to, json_string(roots[i]));
		json_array_append_new(
		    ids, json_pack("[I, I]", ok ? (json_int_t)st.st_dev : -1, ok ? (json_int_t)st.st_ino : -1));
	}
	/* The coarse clock, which file times come from: a file CMD changes
	 * after this moment has a ctime at or after it. */
	json_t *rec = json_pack("{s:s, s:I, s:i, s:I, s:s, s:o, s:o}", "run", t->id, "from",
	                        (json_int_t)(now_ns(CLOCK_REALTIME_COARSE) - SLACK_NS), "pid", (int)getpid(), "started",
	                        (json_int_t)process_started(getpid()), "boot", boot, "write", write_to, "ids", ids);
	t->line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	return t->line ? 0 : -ENOMEM;
}

int trust_sandbox_begin(struct trust_run *t, const char *state, char *errbuf, size_t errlen)
{
	int r = -ENOMEM;
	if (t->line) {
		int fd = open_in(state, TRUST_TRAIL, O_WRONLY | O_CREAT | O_APPEND);
		r = fd < 0 ? fd : append_line(fd, t->line);
		if (r == 0 && fdatasync(fd) < 0)
			r = -errno;
		if (r < 0 && fd >= 0)
			close(fd);
		if (r == 0)
			t->fd = fd;
	}
	if (r < 0)
		snprintf(errbuf, errlen,
		         "cannot note in %s/%s where this sandbox may write (%s): a later run could not tell its "
		         "files from yours",
		         state, TRUST_TRAIL, strerror(-r));
	return r;
}

void trust_sandbox_end(struct trust_run *t)
{
	free(t->line);
	t->line = NULL;
	if (t->fd < 0)
		return;
	/* Every process of the sandbox is gone: whatever it changed has a
	 * ctime before this moment, which a clock step forward only moves
	 * later. */
	json_t *rec = json_pack("{s:s, s:I}", "run", t->id, "to", (json_int_t)now_ns(CLOCK_REALTIME));
	/* Not written: the run stays open in the trail, and the next check
	 * takes it to have written until it finds keyward gone. */
	(void)append_json(t->fd, rec);
	close(t->fd);
	t->fd = -1;
}

/* ---- reading ---- */

/* The whole of a file of the state directory, up to max bytes,
 * NUL-terminated, in b; an absent file is empty. */
static int read_all(const char *state, const char *file, size_t max, struct buf *b)
{
	buf_init(b, max + 65536 + 1);
	int fd = open_in(state, file, O_RDONLY);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	int r = 0;
	for (;;) {
		char *at;
		if ((r = buf_space(b, 65536, &at)) < 0)
			break;
		ssize_t n = read(fd, at, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		buf_advance(b, (size_t)n);
	}
	close(fd);
	return r < 0 ? r : buf_append(b, "", 1);
}

/* Calls fn for each line of b that is a JSON object; stops when fn
 * returns false. */
static void each_record(const struct buf *b, bool (*fn)(json_t *, void *), void *arg)
{
	size_t pos = 0, len;
	const char *line;
	size_t n = b->len ? b->len - 1 : 0; /* without the NUL */
	while (field_next(b->data, n, &pos, '\n', &line, &len)) {
		json_t *rec = json_loadb(line, len, 0, NULL);
		bool go_on = true;
		if (json_is_object(rec))
			go_on = fn(rec, arg);
		json_decref(rec);
		if (!go_on)
			break;
	}
}

struct pin_find {
	const char *name;
	const struct stat *st;
	bool match; /* the last pin of name */
};

static bool pin_find_cb(json_t *rec, void *arg)
{
	struct pin_find *f = arg;
	const char *name = json_string_value(json_object_get(rec, "name"));
	if (!name || !streq(name, f->name))
		return true;
	f->match = json_integer_value(json_object_get(rec, "dev")) == (json_int_t)f->st->st_dev &&
	           json_integer_value(json_object_get(rec, "ino")) == (json_int_t)f->st->st_ino &&
	           json_integer_value(json_object_get(rec, "ctime")) == ns_of(&f->st->st_ctim);
	return true;
}

static int pin(const char *state, const char *abs, const struct stat *st)
{
	json_t *rec = json_pack("{s:s, s:I, s:I, s:I}", "name", abs, "dev", (json_int_t)st->st_dev, "ino",
	                        (json_int_t)st->st_ino, "ctime", (json_int_t)ns_of(&st->st_ctim));
	int fd = open_in(state, TRUST_PINS, O_WRONLY | O_CREAT | O_APPEND);
	int r = fd < 0 ? fd : append_json(fd, rec);
	if (fd < 0)
		json_decref(rec);
	else
		close(fd);
	return r;
}

/* One sandbox of the trail. */
struct span {
	char id[48];
	int64_t from, to; /* to: INT64_MAX while it runs */
	json_t *write;    /* its roots (borrowed from the trail's record) */
	json_t *ids;      /* their [device, inode] pairs (borrowed), or NULL */
	json_t *rec;
	pid_t pid;
	long long started;
	char boot[64];
};

struct spans {
	struct span *v;
	size_t n, cap;
	bool oom; /* not all read: nothing may pass */
};

static bool span_cb(json_t *rec, void *arg)
{
	struct spans *s = arg;
	const char *id = json_string_value(json_object_get(rec, "run"));
	if (!id)
		return true;
	json_t *to = json_object_get(rec, "to");
	if (json_is_integer(to)) {
		for (size_t i = s->n; i-- > 0;)
			if (streq(s->v[i].id, id)) {
				s->v[i].to = json_integer_value(to);
				break;
			}
		return true;
	}
	json_t *write = json_object_get(rec, "write");
	if (!json_is_array(write) || !json_is_integer(json_object_get(rec, "from")))
		return true;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct span *v = realloc(s->v, cap * sizeof(*v));
		if (!v) {
			s->oom = true;
			return false;
		}
		s->v = v;
		s->cap = cap;
	}
	struct span *p = &s->v[s->n++];
	*p = (struct span){ .from = json_integer_value(json_object_get(rec, "from")),
		            .to = INT64_MAX,
		            .write = write,
		            .ids = json_object_get(rec, "ids"),
		            .rec = json_incref(rec),
		            .pid = (pid_t)json_integer_value(json_object_get(rec, "pid")),
		            .started = (long long)json_integer_value(json_object_get(rec, "started")) };
	snprintf(p->id, sizeof(p->id), "%s", id);
	const char *boot = json_string_value(json_object_get(rec, "boot"));
	snprintf(p->boot, sizeof(p->boot), "%s", boot ? boot : "");
	return true;
}

static void spans_free(struct spans *s)
{
	for (size_t i = 0; i < s->n; i++)
		json_decref(s->v[i].rec);
	free(s->v);
}

/* A run without its end: still running (its keyward is the same process,
 * in this boot), or dead since an unknown moment, taken as now, and noted
 * so that the next check need not tell again. */
static void settle_open(const char *state, struct spans *s)
{
	char boot[64] = "";
	bool have_boot = boot_id(boot, sizeof(boot));
	int fd = -2;
	for (size_t i = 0; i < s->n; i++) {
		struct span *p = &s->v[i];
		if (p->to != INT64_MAX)
			continue;
		if (have_boot && streq(p->boot, boot) && p->pid > 0 && p->started >= 0 &&
		    process_started(p->pid) == p->started)
			continue; /* it runs: its sandbox may write now */
		p->to = now_ns(CLOCK_REALTIME);
		if (fd == -2)
			fd = open_in(state, TRUST_TRAIL, O_WRONLY | O_APPEND);
		if (fd >= 0)
			(void)append_json(fd, json_pack("{s:s, s:I}", "run", p->id, "to", (json_int_t)p->to));
	}
	if (fd >= 0)
		close(fd);
}

/* ---- the way to a file ---- */

struct object {
	char path[PATH_MAX]; /* real: every folder before it resolved */
	int64_t ctime;
	bool dir;
	dev_t dev;
	ino_t ino;
};

/* Follows name as the kernel does, one entry at a time, and lists each
 * entry met (folders, links, the file) with its real place and its ctime.
 * Returns the number listed, or a negative errno. */
static int walk(const char *name, struct object *out, size_t max)
{
	char cur[PATH_MAX], rest[2 * PATH_MAX];
	size_t n = 0;
	int links = 0;
	if (name[0] == '/')
		snprintf(cur, sizeof(cur), "/");
	else if (!realpath(".", cur))
		return -errno;
	if (snprintf(rest, sizeof(rest), "%s", name) >= (int)sizeof(rest))
		return -ENAMETOOLONG;
	for (;;) {
		char *p = rest;
		while (*p == '/')
			p++;
		if (!*p)
			return (int)n;
		char comp[NAME_MAX + 1];
		size_t len = strcspn(p, "/");
		if (len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(comp, p, len);
		comp[len] = '\0';
		memmove(rest, p + len, strlen(p + len) + 1);
		if (streq(comp, "."))
			continue;
		if (streq(comp, "..")) {
			char *slash = strrchr(cur, '/');
			if (slash && slash != cur)
				*slash = '\0';
			else
				snprintf(cur, sizeof(cur), "/");
			continue;
		}
		if (n == max)
			return -E2BIG;
		struct object *o = &out[n++];
		char path[PATH_MAX + NAME_MAX + 2];
		join_path(path, sizeof(path), cur, comp);
		if (strlen(path) >= sizeof(o->path))
			return -ENAMETOOLONG;
		struct stat st;
		if (lstat(path, &st) < 0)
			return -errno;
		snprintf(o->path, sizeof(o->path), "%s", path);
		o->ctime = ns_of(&st.st_ctim);
		o->dir = S_ISDIR(st.st_mode);
		o->dev = st.st_dev;
		o->ino = st.st_ino;
		if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX], more[2 * PATH_MAX];
			ssize_t tl = readlink(path, target, sizeof(target) - 1);
			if (tl < 0)
				return -errno;
			target[tl] = '\0';
			if (++links > MAX_LINKS)
				return -ELOOP;
			if (snprintf(more, sizeof(more), "%s/%s", target, rest) >= (int)sizeof(more))
				return -ENAMETOOLONG;
			snprintf(rest, sizeof(rest), "%s", more);
			if (target[0] == '/')
				snprintf(cur, sizeof(cur), "/");
			continue;
		}
		if (!o->dir && strspn(rest, "/") != strlen(rest))
			return -ENOTDIR;
		snprintf(cur, sizeof(cur), "%s", path);
	}
}

/* Whether a sandbox writing under root could have made or changed the
 * entry at path: one beneath root, or root itself when it is a file (a
 * folder root's own ctime moves with everything CMD does in it). */
static bool under(const char *path, bool dir, const char *root)
{
	size_t rl = strlen(root);
	if (streq(root, "/"))
		return !(dir && streq(path, "/"));
	if (strncmp(path, root, rl) != 0)
		return false;
	return path[rl] == '/' || (path[rl] == '\0' && !dir);
}

static void utc(int64_t ns, char *out, size_t outlen)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
}

/* The path of the root of p whose device and inode are dev and ino, or
 * NULL. */
static const char *root_with_id(const struct span *p, dev_t dev, ino_t ino)
{
	for (size_t k = 0; k < json_array_size(p->ids); k++) {
		json_t *id = json_array_get(p->ids, k);
		if (json_integer_value(json_array_get(id, 0)) == (json_int_t)dev &&
		    json_integer_value(json_array_get(id, 1)) == (json_int_t)ino)
			return json_string_value(json_array_get(p->write, k));
	}
	return NULL;
}

/* The root, of a sandbox that ran when o changed, that o lies beneath (by
 * its path, or by one of its folders being a root under another name:
 * a bind mount), or that o is when it is a file; NULL if none. */
static const char *span_tainting(const struct spans *s, const struct object *o)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct span *p = &s->v[i];
		if (o->ctime < p->from || o->ctime > p->to)
			continue;
		for (size_t k = 0; k < json_array_size(p->write); k++) {
			const char *r = json_string_value(json_array_get(p->write, k));
			if (r && under(o->path, o->dir, r))
				return r;
		}
		const char *r = o->dir ? NULL : root_with_id(p, o->dev, o->ino);
		/* its folders, from the nearest up */
		char up[PATH_MAX];
		snprintf(up, sizeof(up), "%s", o->path);
		for (char *slash; !r && (slash = strrchr(up, '/'));) {
			struct stat st;
			bool top = slash == up;
			slash[top ? 1 : 0] = '\0';
			if (lstat(up, &st) == 0)
				r = root_with_id(p, st.st_dev, st.st_ino);
			if (top)
				break;
		}
		if (r)
			return r;
	}
	return NULL;
}

static void absolute_name(const char *name, char *out, size_t outlen)
{
	char cwd[PATH_MAX];
	if (name[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		snprintf(out, outlen, "%s", name);
	else
		join_path(out, outlen, cwd, name);
}

int trust_check(const char *state, const char *name, char *errbuf, size_t errlen)
{
	struct stat st;
	if (stat(name, &st) < 0 || !S_ISREG(st.st_mode))
		return 0; /* nothing to take, or not a file: the loader says so */
	char abs[PATH_MAX];
	absolute_name(name, abs, sizeof(abs));
	struct buf pins = { 0 }, trail = { 0 };
	struct pin_find f = { .name = abs, .st = &st };
	int r = read_all(state, TRUST_PINS, PINS_MAX, &pins);
	if (r == 0)
		each_record(&pins, pin_find_cb, &f);
	buf_free(&pins);
	if (r == 0 && f.match)
		return 0;

	struct object *objs = calloc(MAX_OBJECTS, sizeof(*objs));
	struct spans spans = { 0 };
	if (!objs) {
		r = -ENOMEM;
		goto out;
	}
	int n = walk(name, objs, MAX_OBJECTS);
	if (n < 0) {
		r = n;
		snprintf(errbuf, errlen, "policy %s: cannot follow its way to tell whether a sandbox wrote it: %s",
		         name, strerror(-r));
		goto out;
	}
	if ((r = read_all(state, TRUST_TRAIL, TRAIL_MAX, &trail)) < 0) {
		snprintf(errbuf, errlen, "cannot read %s/%s to tell whether a sandbox wrote the policy %s: %s", state,
		         TRUST_TRAIL, name, strerror(-r));
		goto out;
	}
	each_record(&trail, span_cb, &spans);
	if (spans.oom) {
		r = -ENOMEM;
		snprintf(errbuf, errlen, "policy %s: out of memory reading %s/%s", name, state, TRUST_TRAIL);
		goto out;
	}
	settle_open(state, &spans);
	for (int i = 0; i < n; i++) {
		const char *root = span_tainting(&spans, &objs[i]);
		if (!root)
			continue;
		char when[64];
		utc(objs[i].ctime, when, sizeof(when));
		bool self = i == n - 1;
		snprintf(errbuf, errlen,
		         "policy %s: %s%s changed at %s, while a sandbox that could write %s ran: CMD may have "
		         "written it%s. Review it (keyward policy check %s); to take it as it is now: keyward "
		         "policy trust %s",
		         name, self ? "the file" : "the entry ", self ? "" : objs[i].path, when, root,
		         self ? "" : ", and so chosen which file this name opens", name, name);
		r = -EPERM;
		goto out;
	}
	/* Passed: not looked at again until it changes. A pin that cannot be
	 * written only costs the next run this check again. */
	(void)pin(state, abs, &st);
	r = 0;
out:
	buf_free(&trail);
	spans_free(&spans);
	free(objs);
	return r;
}

int trust_policy(const char *state, const char *name, char *errbuf, size_t errlen)
{
	struct stat st;
	char abs[PATH_MAX];
	if (stat(name, &st) < 0) {
		int e = errno;
		snprintf(errbuf, errlen, "%s: %s", name, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(errbuf, errlen, "%s: not a regular file", name);
		return -EINVAL;
	}
	absolute_name(name, abs, sizeof(abs));
	int r = pin(state, abs, &st);
	if (r < 0)
		snprintf(errbuf, errlen, "cannot write %s/%s: %s", state, TRUST_PINS, strerror(-r));
	return r;
}
