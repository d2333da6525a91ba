/* The audit log writer: one JSON line per record, hash-chained.
 *
 * Trust: record fields come partly from the sandbox (host, path, method),
 * so every string is JSON-escaped (json_str never lets a raw newline or an
 * invalid UTF-8 byte through) and cut to a fixed length, so one record is
 * always one line and always fits the line buffer. The file itself is
 * trusted only as far as its last line: audit_open checks that it is a
 * complete record, and `keyward audit verify` checks the rest.
 *
 * Durability: records are not fsync'ed one by one (that would put a disk
 * flush on every proxied request). A written record is in the page cache
 * and survives a crash of keyward, not a crash of the kernel or a power
 * cut; audit_close syncs. */
#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "common/buf.h"
#include "common/encode.h"
#include "common/json.h"

#define AUDIT_HASH_HEX 64
/* A last line longer than this is not one of ours: refuse rather than read
 * an unbounded amount into memory. verify.c uses the same bound. */
#define AUDIT_MAX_LINE   (1024 * 1024)
#define AUDIT_TAIL_BLOCK 65536

/* Per-field cuts. The sandbox controls path and detail (which quotes it);
 * the short fields are names, addresses and words. */
#define AUDIT_CUT_LONG  4096
#define AUDIT_CUT_SHORT 256
#define AUDIT_CUT_MARK  "\xe2\x80\xa6" /* U+2026 HORIZONTAL ELLIPSIS */
#define AUDIT_LINE_MAX  65536

/* A batch holds at most this many records and bytes of their bodies; one
 * record, however long its strings, always fits an empty batch. */
#define AUDIT_BATCH_RECORDS 256
#define AUDIT_BATCH_BYTES   (256 * 1024)
/* What the writer adds around a body: {"seq":N,"time":"…" and
 * ,"prev":"…"} and the newline. */
#define AUDIT_FRAME_MAX (7 + DEC_MAX + 9 + 27 + 1 + 9 + AUDIT_HASH_HEX + 2 + 1)

/* Worst case of one escaped string: every byte as \u00XX, plus the
 * marker and the quotes; of a key: ,"request_seq": ; of a number: 20. */
#define AUDIT_STR_WORST(n) ((n)*6 + 3 + 2)
#define AUDIT_KEY_WORST    16
#define AUDIT_LINE_WORST                                                                                               \
	(2 * AUDIT_STR_WORST(AUDIT_CUT_LONG) + 9 * AUDIT_STR_WORST(AUDIT_CUT_SHORT) + 22 * AUDIT_KEY_WORST + 10 * 20 + \
	 32 + AUDIT_HASH_HEX + 2 + 4)
_Static_assert(AUDIT_LINE_WORST < AUDIT_LINE_MAX, "an audit record must always fit its buffer");
_Static_assert(AUDIT_LINE_MAX <= AUDIT_BATCH_BYTES, "an empty batch must take any record");

struct audit_batch {
	struct buf body;                  /* the records' bodies, back to back */
	size_t ends[AUDIT_BATCH_RECORDS]; /* where each body ends in body */
	size_t n;
};

struct audit_log {
	pthread_mutex_t lock;
	int fd;
	char *path;
	uint64_t seq;                  /* seq of the next record */
	char prev[AUDIT_HASH_HEX + 1]; /* hash of the last complete line */
	off_t size;                    /* file size after the last complete line */
	bool dirty;                    /* a failed write could not be truncated away */
	atomic_bool healthy;
	struct buf out;     /* the lines of one batch, reused under lock */
	EVP_MD *sha256;     /* fetched once: an implicit fetch per digest costs more than the digest */
	EVP_MD_CTX *md_ctx; /* used under lock */
	time_t stamp_sec;   /* the second stamp_day was made for */
	char stamp_day[24]; /* "YYYY-MM-DDTHH:MM:SS" of stamp_sec */
};

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!errbuf || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static void hash_line(struct audit_log *log, const char *p, size_t n, char out[AUDIT_HASH_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	/* SHA-256 fails only on allocation failure inside OpenSSL; a zero hash
	 * then breaks the chain visibly, never silently. */
	if (EVP_DigestInit_ex2(log->md_ctx, log->sha256, NULL) != 1 || EVP_DigestUpdate(log->md_ctx, p, n) != 1 ||
	    EVP_DigestFinal_ex(log->md_ctx, md, &mdlen) != 1 || mdlen != 32)
		memset(md, 0, 32);
	hex_encode(md, 32, out);
}

static bool is_hash_hex(const char *s)
{
	if (strlen(s) != AUDIT_HASH_HEX)
		return false;
	for (size_t i = 0; i < AUDIT_HASH_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static ssize_t pread_full(int fd, char *p, size_t n, off_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t k = pread(fd, p + done, n - done, off + (off_t)done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO; /* the file shrank under us */
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/* Finds where the last line of a file of `size` bytes (ending in '\n')
 * starts, reading backwards in blocks. -EFBIG past AUDIT_MAX_LINE. */
static int tail_line_start(int fd, off_t size, off_t *ret_start)
{
	_cleanup_free_ char *block = malloc(AUDIT_TAIL_BLOCK);
	off_t end = size - 1; /* the final '\n' */
	off_t pos = end;

	if (!block)
		return -ENOMEM;
	while (pos > 0) {
		size_t n = pos < AUDIT_TAIL_BLOCK ? (size_t)pos : AUDIT_TAIL_BLOCK;
		ssize_t r = pread_full(fd, block, n, pos - (off_t)n);
		if (r < 0)
			return (int)r;
		char *nl = memrchr(block, '\n', n);
		if (nl) {
			pos = pos - (off_t)n + (nl - block) + 1;
			break;
		}
		pos -= (off_t)n;
		if (end - pos > AUDIT_MAX_LINE)
			return -EFBIG;
	}
	if (end - pos > AUDIT_MAX_LINE)
		return -EFBIG;
	*ret_start = pos;
	return 0;
}

/* Reads the last line of a non-empty file and takes seq and hash from it. */
static int tail_load(struct audit_log *log, off_t size, char *errbuf, size_t errlen)
{
	_cleanup_free_ char *line = NULL; /* declared before any goto jumps over it */
	char last;
	off_t start = 0;
	ssize_t k = pread_full(log->fd, &last, 1, size - 1);
	if (k < 0) {
		set_err(errbuf, errlen, "%s: %s", log->path, strerror((int)-k));
		return (int)k;
	}
	if (last != '\n') {
		set_err(errbuf, errlen, "%s: the last line is incomplete (no newline at the end); ", log->path);
		goto bad;
	}
	int r = tail_line_start(log->fd, size, &start);
	if (r == -EFBIG) {
		set_err(errbuf, errlen, "%s: the last line is longer than 1 MiB; ", log->path);
		goto bad;
	}
	if (r < 0) {
		set_err(errbuf, errlen, "%s: %s", log->path, strerror(-r));
		return r;
	}

	size_t len = (size_t)(size - 1 - start);
	line = malloc(len + 1);
	if (!line)
		return -ENOMEM;
	k = pread_full(log->fd, line, len, start);
	if (k < 0) {
		set_err(errbuf, errlen, "%s: %s", log->path, strerror((int)-k));
		return (int)k;
	}

	json_error_t jerr;
	json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *seq = json_object_get(obj, "seq");
	json_t *prev = json_object_get(obj, "prev");
	bool ok = json_is_object(obj) && json_is_integer(seq) && json_integer_value(seq) >= 0 &&
	          json_integer_value(seq) < INT64_MAX && json_is_string(prev) && is_hash_hex(json_string_value(prev));
	if (ok)
		log->seq = (uint64_t)json_integer_value(seq) + 1;
	json_decref(obj);
	if (!ok) {
		set_err(errbuf, errlen, "%s: the last line is not an audit record; ", log->path);
		goto bad;
	}
	hash_line(log, line, len, log->prev);
	return 0;

bad:
	if (errbuf && errlen) {
		size_t used = strnlen(errbuf, errlen);
		if (used + 1 < errlen)
			snprintf(errbuf + used, errlen - used,
			         "run `keyward audit verify %s` to see what is wrong, then move the "
			         "file aside (e.g. mv %s %s.damaged) so that keyward starts a new log",
			         log->path, log->path, log->path);
	}
	return -EBADMSG;
}

static void audit_free(struct audit_log *log)
{
	if (!log)
		return;
	if (log->fd >= 0)
		close(log->fd);
	pthread_mutex_destroy(&log->lock);
	buf_free(&log->out);
	EVP_MD_CTX_free(log->md_ctx);
	EVP_MD_free(log->sha256);
	free(log->path);
	free(log);
}

int audit_reserve(const char *path, struct audit_log **ret, char *errbuf, size_t errlen)
{
	struct stat st;
	int r;

	struct audit_log *log = calloc(1, sizeof(*log));
	if (!log)
		return -ENOMEM;
	log->fd = -1;
	pthread_mutex_init(&log->lock, NULL);
	buf_init(&log->out, AUDIT_BATCH_BYTES + AUDIT_BATCH_RECORDS * AUDIT_FRAME_MAX);
	atomic_init(&log->healthy, true);
	log->stamp_sec = -1;
	memset(log->prev, '0', AUDIT_HASH_HEX);
	log->prev[AUDIT_HASH_HEX] = '\0';
	log->path = strdup(path);
	if (!log->path) {
		r = -ENOMEM;
		goto fail;
	}

	/* O_RDWR rather than O_WRONLY: the last line is read back through the
	 * same descriptor, so there is no window in which the name could be
	 * swapped between a write open and a read open. O_NONBLOCK keeps a
	 * FIFO planted at the path from blocking the open; it is refused below.
	 * O_NOFOLLOW: a symlink could point the log at another file. */
	log->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	if (log->fd < 0) {
		r = -errno;
		set_err(errbuf, errlen, "%s: %s", path, r == -ELOOP ? "is a symbolic link (refused)" : strerror(-r));
		goto fail;
	}
	if (fstat(log->fd, &st) < 0) {
		r = -errno;
		set_err(errbuf, errlen, "%s: %s", path, strerror(-r));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		set_err(errbuf, errlen, "%s: not a regular file", path);
		goto fail;
	}
	int fl = fcntl(log->fd, F_GETFL);
	if (fl < 0 || fcntl(log->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		r = -errno;
		set_err(errbuf, errlen, "%s: %s", path, strerror(-r));
		goto fail;
	}
	/* Two writers would interleave two chains in one file, which verify
	 * would then report as tampering: allow one keyward per log. */
	if (flock(log->fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		set_err(errbuf, errlen, "%s: %s", path,
		        r == -EWOULDBLOCK ? "in use by another keyward process" : strerror(-r));
		if (r == -EWOULDBLOCK)
			r = -EBUSY;
		goto fail;
	}
	/* Under the lock, nobody else appends: the size stays what it is now. */
	log->size = st.st_size;
	*ret = log;
	return 0;

fail:
	audit_free(log);
	return r;
}

int audit_load(struct audit_log *log, char *errbuf, size_t errlen)
{
	/* The digest is fetched here, not in audit_reserve: it is what starts
	 * OpenSSL (its configuration, its providers), about a millisecond. */
	log->sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	log->md_ctx = EVP_MD_CTX_new();
	if (!log->sha256 || !log->md_ctx)
		return -ENOMEM;
	return log->size > 0 ? tail_load(log, log->size, errbuf, errlen) : 0;
}

int audit_open(const char *path, struct audit_log **ret, char *errbuf, size_t errlen)
{
	struct audit_log *log;
	int r = audit_reserve(path, &log, errbuf, errlen);
	if (r < 0)
		return r;
	if ((r = audit_load(log, errbuf, errlen)) < 0) {
		audit_free(log);
		return r;
	}
	*ret = log;
	return 0;
}

void audit_close(struct audit_log *log)
{
	if (!log)
		return;
	/* The only sync: records are not flushed one by one (see the top). */
	if (log->fd >= 0)
		(void)fdatasync(log->fd);
	audit_free(log);
}

bool audit_healthy(struct audit_log *log)
{
	/* No log is not a healthy log: fail closed. */
	return log && atomic_load(&log->healthy);
}

/* Returns s, or a copy cut to at most `limit` bytes plus an ellipsis in
 * tmp (limit + sizeof(AUDIT_CUT_MARK) bytes). */
static const char *cut(const char *s, size_t limit, char *tmp)
{
	if (!s)
		return NULL;
	size_t n = strnlen(s, limit + 1);
	if (n <= limit)
		return s;
	n = limit;
	/* A continuation byte at the cut means it splits a character: back off
	 * to its lead byte so the cut string stays valid UTF-8. */
	for (int k = 0; k < 3 && n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; k++)
		n--;
	memcpy(tmp, s, n);
	memcpy(tmp + n, AUDIT_CUT_MARK, sizeof(AUDIT_CUT_MARK));
	return tmp;
}

/* Writes "key":"value" cut to limit; absent (NULL) values are omitted. */
static int kv_cut(struct buf *b, bool *first, const char *key, const char *val, size_t limit)
{
	char tmp[AUDIT_CUT_LONG + sizeof(AUDIT_CUT_MARK)];
	if (!val)
		return 0;
	/* Most values are short: measured once, not again by the writer. */
	size_t n = strnlen(val, limit + 1);
	if (n <= limit)
		return json_kv_strn(b, first, key, val, n);
	return json_kv_str(b, first, key, cut(val, limit, tmp));
}

static int64_t clamp_u64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* Writes the time of now as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (STAMP_LEN
 * bytes) at p. The date part is made once a second. Called under the lock. */
#define STAMP_LEN 27
static int put_stamp(struct audit_log *log, char *p)
{
	struct timespec ts;
	struct tm tm;

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return -errno;
	if (ts.tv_sec != log->stamp_sec) {
		if (!gmtime_r(&ts.tv_sec, &tm))
			return -errno;
		if (strftime(log->stamp_day, sizeof(log->stamp_day), "%Y-%m-%dT%H:%M:%S", &tm) != 19)
			return -EOVERFLOW;
		log->stamp_sec = ts.tv_sec;
	}
	memcpy(p, log->stamp_day, 19);
	p[19] = '.';
	unsigned us = (unsigned)(ts.tv_nsec / 1000);
	for (int i = 25; i >= 20; i--, us /= 10)
		p[i] = (char)('0' + us % 10);
	p[26] = 'Z';
	return 0;
}

/* One member of a record on the fast path (record_body_fast): its key
 * with the comma, quotes and colon before the value, and the value as it
 * is written. */
struct member {
	const char *key;
	size_t key_len;
	const char *val;
	size_t len;
	bool quoted;
};

#define MEMBER_KEY(k) ",\"" k "\":", sizeof(",\"" k "\":") - 1

/* Adds a string member if val (NULL: absent, nothing added) can be
 * written as it is: no byte to escape, not longer than limit. Returns
 * false if it cannot. */
static bool member_str(struct member *m, size_t *k, const char *key, size_t key_len, const char *val, size_t limit)
{
	if (!val)
		return true;
	size_t n = json_plain_len(val, limit);
	if (n == SIZE_MAX)
		return false;
	m[(*k)++] = (struct member){ key, key_len, val, n, true };
	return true;
}

static void member_int(struct member *m, size_t *k, const char *key, size_t key_len, char digits[DEC_MAX], int64_t v)
{
	m[(*k)++] = (struct member){ key, key_len, digits, (size_t)(dec_put(digits, v) - digits), false };
}

/* record_body for the records of nearly every request, whose strings need
 * neither escaping nor cutting: the same bytes, measured once and written
 * with one reservation of the batch's buffer, where the general writer
 * makes two per member. Returns 1 if it wrote the body, 0 if a string
 * needs the general writer (nothing written), or -ENOBUFS/-ENOMEM. */
static int record_body_fast(struct buf *b, const struct audit_record *rec, bool result)
{
	struct member m[19]; /* eleven strings and eight numbers at most */
	char num[8][DEC_MAX];
	size_t k = 0, nk = 0;
	bool ok = member_str(m, &k, MEMBER_KEY("event"), rec->event, AUDIT_CUT_SHORT);
	if (result)
		member_int(m, &k, MEMBER_KEY("request_seq"), num[nk++], clamp_u64(rec->request_seq));
	ok = ok && member_str(m, &k, MEMBER_KEY("listener"), rec->listener, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("client"), rec->client, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("method"), rec->method, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("scheme"), rec->scheme, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("host"), rec->host, AUDIT_CUT_SHORT);
	if (ok && rec->port > 0)
		member_int(m, &k, MEMBER_KEY("port"), num[nk++], rec->port);
	ok = ok && member_str(m, &k, MEMBER_KEY("path"), rec->path, AUDIT_CUT_LONG);
	if (ok && rec->route >= 0)
		member_int(m, &k, MEMBER_KEY("route"), num[nk++], rec->route);
	ok = ok && member_str(m, &k, MEMBER_KEY("credential"), rec->credential, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("decision"), rec->decision, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("reason"), rec->reason, AUDIT_CUT_SHORT) &&
	     member_str(m, &k, MEMBER_KEY("detail"), rec->detail, AUDIT_CUT_LONG);
	if (!ok)
		return 0;
	if (rec->status > 0)
		member_int(m, &k, MEMBER_KEY("status"), num[nk++], rec->status);
	if (rec->totals) {
		member_int(m, &k, MEMBER_KEY("bytes_in"), num[nk++], clamp_u64(rec->bytes_in));
		member_int(m, &k, MEMBER_KEY("bytes_out"), num[nk++], clamp_u64(rec->bytes_out));
		member_int(m, &k, MEMBER_KEY("duration_us"), num[nk++], clamp_u64(rec->duration_us));
	}
	if (rec->redacted > 0)
		member_int(m, &k, MEMBER_KEY("redacted"), num[nk++], clamp_u64(rec->redacted));

	size_t total = 0;
	for (size_t i = 0; i < k; i++)
		total += m[i].key_len + m[i].len + (m[i].quoted ? 2 : 0);
	char *at;
	int r = buf_space(b, total, &at);
	if (r < 0)
		return r;
	char *p = at;
	for (size_t i = 0; i < k; i++) {
		p = mempcpy(p, m[i].key, m[i].key_len);
		if (m[i].quoted)
			*p++ = '"';
		p = mempcpy(p, m[i].val, m[i].len);
		if (m[i].quoted)
			*p++ = '"';
	}
	buf_advance(b, (size_t)(p - at));
	return 1;
}

/* Builds a record's body: every member after "time" and before "prev",
 * each with its leading comma. Key order is fixed (docs/audit.md). */
static int record_body(struct buf *b, const struct audit_record *rec)
{
	bool first = false;
	bool result = streq(rec->event, "result");
	int r = record_body_fast(b, rec, result);
	if (r != 0)
		return r < 0 ? r : 0;
	r = kv_cut(b, &first, "event", rec->event, AUDIT_CUT_SHORT);

	if (r == 0 && result)
		r = json_kv_int(b, &first, "request_seq", clamp_u64(rec->request_seq));
	if (r == 0)
		r = kv_cut(b, &first, "listener", rec->listener, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "client", rec->client, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "method", rec->method, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "scheme", rec->scheme, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "host", rec->host, AUDIT_CUT_SHORT);
	if (r == 0 && rec->port > 0)
		r = json_kv_int(b, &first, "port", rec->port);
	if (r == 0)
		r = kv_cut(b, &first, "path", rec->path, AUDIT_CUT_LONG);
	if (r == 0 && rec->route >= 0)
		r = json_kv_int(b, &first, "route", rec->route);
	if (r == 0)
		r = kv_cut(b, &first, "credential", rec->credential, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "decision", rec->decision, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "reason", rec->reason, AUDIT_CUT_SHORT);
	if (r == 0)
		r = kv_cut(b, &first, "detail", rec->detail, AUDIT_CUT_LONG);
	if (r == 0 && rec->status > 0)
		r = json_kv_int(b, &first, "status", rec->status);
	if (r == 0 && rec->totals)
		r = json_kv_int(b, &first, "bytes_in", clamp_u64(rec->bytes_in));
	if (r == 0 && rec->totals)
		r = json_kv_int(b, &first, "bytes_out", clamp_u64(rec->bytes_out));
	if (r == 0 && rec->totals)
		r = json_kv_int(b, &first, "duration_us", clamp_u64(rec->duration_us));
	if (r == 0 && rec->redacted > 0)
		r = json_kv_int(b, &first, "redacted", clamp_u64(rec->redacted));
	return r;
}

/* Writes all of p at the end of the file; on failure cuts the file back to
 * log->size so that no partial line stays behind. Called under the lock. */
static int append_line(struct audit_log *log, const char *p, size_t n)
{
	size_t done = 0;
	int r = 0;

	/* An earlier failure left bytes we could not remove: try again before
	 * appending, or the new line would be glued to a fragment. */
	if (log->dirty) {
		if (ftruncate(log->fd, log->size) < 0)
			return -errno;
		log->dirty = false;
	}
	while (done < n) {
		ssize_t k = write(log->fd, p + done, n - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)k;
	}
	if (r == 0) {
		log->size += (off_t)n;
		return 0;
	}
	if (done > 0 && ftruncate(log->fd, log->size) < 0)
		log->dirty = true;
	return r;
}

int audit_batch_new(struct audit_batch **ret)
{
	struct audit_batch *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	buf_init(&b->body, AUDIT_BATCH_BYTES);
	*ret = b;
	return 0;
}

void audit_batch_free(struct audit_batch *b)
{
	if (!b)
		return;
	buf_free(&b->body);
	free(b);
}

size_t audit_batch_count(const struct audit_batch *b)
{
	return b ? b->n : 0;
}

int audit_batch_add(struct audit_batch *b, const struct audit_record *rec)
{
	if (!b || !rec || !rec->event)
		return -EINVAL;
	if (b->n == AUDIT_BATCH_RECORDS)
		return -ENOBUFS;
	size_t before = b->body.len;
	int r = record_body(&b->body, rec);
	if (r < 0) {
		/* Take back what the record had added: the batch stays as it was. */
		b->body.len = before;
		if (b->body.data)
			b->body.data[before] = '\0';
		return r;
	}
	b->ends[b->n] = b->body.len;
	return (int)b->n++;
}

static void batch_reset(struct audit_batch *b)
{
	buf_reset(&b->body);
	b->n = 0;
}

/* Appends to log->out the lines of b, each framed with its seq, the time
 * and the hash of the line before it, and leaves in prev the hash of the
 * last. Called under the lock. */
static int frame_lines(struct audit_log *log, const struct audit_batch *b, char prev[AUDIT_HASH_HEX + 1])
{
	static const char seq_key[] = "{\"seq\":", time_key[] = ",\"time\":\"", prev_key[] = ",\"prev\":\"";
	struct buf *out = &log->out;
	size_t start = 0;

	for (size_t i = 0; i < b->n; i++) {
		size_t body = b->ends[i] - start;
		char *line;
		int r = buf_space(out, body + AUDIT_FRAME_MAX, &line);
		if (r < 0)
			return r;
		char *p = mempcpy(line, seq_key, sizeof(seq_key) - 1);
		p = dec_put(p, clamp_u64(log->seq + i));
		p = mempcpy(p, time_key, sizeof(time_key) - 1);
		r = put_stamp(log, p);
		if (r < 0)
			return r;
		p += STAMP_LEN;
		*p++ = '"';
		p = mempcpy(p, b->body.data + start, body);
		p = mempcpy(p, prev_key, sizeof(prev_key) - 1);
		p = mempcpy(p, prev, AUDIT_HASH_HEX);
		*p++ = '"';
		*p++ = '}';
		/* "prev" is the last member, so the next line's hash covers all of
		 * this one. */
		hash_line(log, line, (size_t)(p - line), prev);
		*p++ = '\n';
		buf_advance(out, (size_t)(p - line));
		start = b->ends[i];
	}
	return 0;
}

int audit_batch_write(struct audit_log *log, struct audit_batch *b, uint64_t *ret_first_seq)
{
	char prev[AUDIT_HASH_HEX + 1];
	uint64_t first;

	if (!log || !b)
		return -EINVAL;
	if (b->n == 0) {
		*ret_first_seq = 0;
		return 0;
	}
	/* Only the framing, the hashes and the write are under the lock: the
	 * bodies were escaped and cut by the thread that made them. */
	pthread_mutex_lock(&log->lock);
	first = log->seq;
	memcpy(prev, log->prev, sizeof(prev));
	buf_reset(&log->out);
	int r = frame_lines(log, b, prev);
	if (r == 0)
		r = append_line(log, log->out.data, log->out.len);
	if (r == 0) {
		/* Chain state moves only once every line is in the file. */
		memcpy(log->prev, prev, sizeof(prev));
		log->seq += b->n;
	}
	atomic_store(&log->healthy, r == 0);
	pthread_mutex_unlock(&log->lock);
	batch_reset(b);
	if (r == 0)
		*ret_first_seq = first;
	return r;
}

int audit_write(struct audit_log *log, const struct audit_record *rec)
{
	struct audit_batch *b = NULL;
	uint64_t seq;

	if (!log || !rec || !rec->event)
		return -EINVAL;
	int r = audit_batch_new(&b);
	if (r == 0)
		r = audit_batch_add(b, rec);
	if (r >= 0)
		r = audit_batch_write(log, b, &seq);
	audit_batch_free(b);
	return r;
}
