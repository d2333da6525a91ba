/* Reading the audit log back: verify the chain, show it to people.
 *
 * Trust: none. The file may have been edited by anyone who could write it,
 * so lines are read through a bounded reader (1 MiB per line), parsed with
 * jansson (which rejects invalid UTF-8 and, with JSON_REJECT_DUPLICATES,
 * records that say two things under one key), and every string shown on a
 * terminal has its control characters escaped: a path from the sandbox may
 * carry escape sequences meant for the operator's terminal. */
#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "common/encode.h"

#define VERIFY_MAX_LINE   (1024 * 1024) /* as in audit.c */
#define VERIFY_READ_BLOCK 65536
#define HASH_HEX          64

enum { LINE_EOF = 0, LINE_FULL = 1, LINE_PARTIAL = 2 };

struct line_reader {
	int fd;
	size_t pos, end;
	bool eof;
	struct buf line; /* the current line, without its newline */
	char block[VERIFY_READ_BLOCK];
};

/* Next line into lr->line. Returns LINE_FULL, LINE_PARTIAL (last line with
 * no newline), LINE_EOF, -EFBIG for a line past the bound, -errno. */
static int reader_next(struct line_reader *lr)
{
	buf_reset(&lr->line);
	for (;;) {
		if (lr->pos == lr->end) {
			if (lr->eof)
				return lr->line.len ? LINE_PARTIAL : LINE_EOF;
			ssize_t k = read(lr->fd, lr->block, sizeof(lr->block));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			lr->pos = 0;
			lr->end = (size_t)k;
			lr->eof = k == 0;
			continue;
		}
		char *start = lr->block + lr->pos;
		char *nl = memchr(start, '\n', lr->end - lr->pos);
		size_t n = nl ? (size_t)(nl - start) : lr->end - lr->pos;
		int r = buf_append(&lr->line, start, n);
		if (r == -ENOBUFS)
			return -EFBIG;
		if (r < 0)
			return r;
		lr->pos += n;
		if (nl) {
			lr->pos++;
			return LINE_FULL;
		}
	}
}

struct chain {
	uint64_t seq;            /* expected seq of the next record */
	char prev[HASH_HEX + 1]; /* expected prev of the next record */
	uint64_t records;
};

static void hash_line(const char *p, size_t n, char out[HASH_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		memset(md, 0, 32);
	hex_encode(md, 32, out);
}

static const char *obj_str(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* A result closes the decision record of its request, which came first. */
static bool result_names_earlier(json_t *obj, uint64_t seq)
{
	json_t *rs = json_object_get(obj, "request_seq");
	return json_is_integer(rs) && json_integer_value(rs) >= 0 && (uint64_t)json_integer_value(rs) < seq;
}

/* Copies at most n bytes of s into out with every byte that is not
 * printable ASCII shown as '?': what a tampered line holds reaches the
 * operator's terminal in a message, and must not act on it. */
static const char *printable(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i = 0;
	for (; s[i] && i < n && i + 1 < outlen; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[i] = '\0';
	return out;
}

/* Checks one complete line against the chain and advances it. Returns 0
 * and *ret_obj (the parsed record, caller's), or -EBADMSG with why. */
static int check_line(struct chain *c, const char *line, size_t len, json_t **ret_obj, char *why, size_t whylen)
{
	json_error_t jerr;
	int r = -EBADMSG;

	char shown[96];
	json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		snprintf(why, whylen, "not valid JSON: %s (column %d)",
		         printable(jerr.text, sizeof(jerr.text), shown, sizeof(shown)), jerr.column);
		return -EBADMSG;
	}
	json_t *seq = json_object_get(obj, "seq");
	const char *prev = obj_str(obj, "prev");
	if (!json_is_object(obj)) {
		snprintf(why, whylen, "not a JSON object");
	} else if (!json_is_integer(seq)) {
		snprintf(why, whylen, "no integer \"seq\"");
	} else if (json_integer_value(seq) < 0 || (uint64_t)json_integer_value(seq) != c->seq) {
		snprintf(why, whylen,
		         "seq out of order: a record was deleted, inserted or moved, or seq was "
		         "edited (expected seq %" PRIu64 ", found %" JSON_INTEGER_FORMAT ")",
		         c->seq, json_integer_value(seq));
	} else if (!prev) {
		snprintf(why, whylen, "no string \"prev\"");
	} else if (!streq(prev, c->prev)) {
		snprintf(why, whylen, "%s (expected prev %s, found %s)",
		         c->records == 0 ? "the first record does not start the chain (the start "
		                           "of the log was removed?)"
		                         : "chain broken: the line before was changed, or lines "
		                           "were deleted or reordered",
		         c->prev, printable(prev, 80, shown, sizeof(shown)));
	} else if (!obj_str(obj, "time")) {
		snprintf(why, whylen, "no string \"time\"");
	} else if (!obj_str(obj, "event")) {
		snprintf(why, whylen, "no string \"event\"");
	} else if (streq(obj_str(obj, "event"), "result") && !result_names_earlier(obj, c->seq)) {
		snprintf(why, whylen, "a result record whose \"request_seq\" does not name an earlier record");
	} else {
		r = 0;
	}
	if (r < 0) {
		json_decref(obj);
		return r;
	}
	hash_line(line, len, c->prev);
	c->seq++;
	c->records++;
	*ret_obj = obj;
	return 0;
}

/* ---- showing records to people ---- */

/* Appends s with control characters escaped (C0, DEL and the C1 range,
 * which terminals also act on), so a hostile path prints as text. */
static int put_clean(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int r = 0;
	for (size_t i = 0; r == 0 && p[i]; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			r = buf_printf(b, "\\x%02x", p[i]);
		else if (p[i] == 0xc2 && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
			r = buf_printf(b, "\\u%04x", p[++i]);
		else
			r = buf_append(b, &p[i], 1);
	}
	return r;
}

static int put_bytes(struct buf *b, json_int_t n)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	if (n < 1024)
		return buf_printf(b, "%" JSON_INTEGER_FORMAT " B", n);
	double v = (double)n / 1024;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	return buf_printf(b, "%.1f %s", v, units[u]);
}

static int put_duration(struct buf *b, json_int_t us)
{
	if (us < 1000)
		return buf_printf(b, "%" JSON_INTEGER_FORMAT " us", us);
	if (us < 1000000)
		return buf_printf(b, "%.1f ms", (double)us / 1000);
	return buf_printf(b, "%.2f s", (double)us / 1000000);
}

static json_int_t obj_int(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* "label value" for an optional string member, two spaces before. */
static int put_opt(struct buf *b, json_t *obj, const char *label, const char *key)
{
	const char *v = obj_str(obj, key);
	int r = 0;
	if (!v)
		return 0;
	r = buf_printf(b, "  %s%s", label, *label ? " " : "");
	return r < 0 ? r : put_clean(b, v);
}

/* s, escaped, then spaces up to width (the decision/event column). */
static int put_padded(struct buf *b, const char *s, size_t width)
{
	int r = put_clean(b, s);
	for (size_t n = strlen(s); r == 0 && n < width; n++)
		r = buf_append(b, " ", 1);
	return r;
}

/* The human sentence of a record, quoted, control bytes escaped. */
static int put_detail(struct buf *b, json_t *obj)
{
	const char *d = obj_str(obj, "detail");
	if (!d)
		return 0;
	int r = buf_puts(b, "  \"");
	if (r == 0)
		r = put_clean(b, d);
	if (r == 0)
		r = buf_puts(b, "\"");
	return r;
}

/* Status, why it was refused or failed, bytes each way, duration: each
 * only if the record has it. */
static int put_totals(struct buf *b, json_t *obj)
{
	int r = 0;
	if (obj_int(obj, "status") > 0)
		r = buf_printf(b, "  %" JSON_INTEGER_FORMAT, obj_int(obj, "status"));
	if (r == 0)
		r = put_opt(b, obj, "reason", "reason");
	if (r == 0)
		r = put_detail(b, obj);
	if (r == 0 && obj_int(obj, "bytes_in") >= 0) {
		r = buf_puts(b, "  in ");
		if (r == 0)
			r = put_bytes(b, obj_int(obj, "bytes_in"));
	}
	if (r == 0 && obj_int(obj, "bytes_out") >= 0) {
		r = buf_puts(b, " out ");
		if (r == 0)
			r = put_bytes(b, obj_int(obj, "bytes_out"));
	}
	if (r == 0 && obj_int(obj, "duration_us") >= 0) {
		r = buf_puts(b, "  ");
		if (r == 0)
			r = put_duration(b, obj_int(obj, "duration_us"));
	}
	if (r == 0 && obj_int(obj, "redacted") > 0)
		r = buf_printf(b, "  redacted %" JSON_INTEGER_FORMAT, obj_int(obj, "redacted"));
	return r;
}

static int put_request(struct buf *b, json_t *obj)
{
	const char *decision = obj_str(obj, "decision");
	const char *scheme = obj_str(obj, "scheme");
	const char *method = obj_str(obj, "method");
	const char *host = obj_str(obj, "host");
	json_int_t port = obj_int(obj, "port");
	int r = put_padded(b, decision ? decision : "?", 5);
	if (r == 0)
		r = buf_append(b, "  ", 2);

	if (r == 0 && method) {
		r = put_clean(b, method);
		if (r == 0)
			r = buf_append(b, " ", 1);
	}
	if (r == 0 && scheme) {
		r = put_clean(b, scheme);
		if (r == 0)
			r = buf_append(b, "://", 3);
	}
	if (r == 0 && host)
		r = put_clean(b, host);
	bool default_port =
	    scheme && ((streq(scheme, "https") && port == 443) || (streq(scheme, "http") && port == 80));
	if (r == 0 && port > 0 && !default_port)
		r = buf_printf(b, ":%" JSON_INTEGER_FORMAT, port);
	if (r == 0 && obj_str(obj, "path"))
		r = put_clean(b, obj_str(obj, "path"));
	if (r == 0 && obj_int(obj, "route") >= 0)
		r = buf_printf(b, "  route %" JSON_INTEGER_FORMAT, obj_int(obj, "route"));
	if (r == 0)
		r = put_opt(b, obj, "cred", "credential");
	if (r == 0)
		r = put_totals(b, obj);
	return r;
}

/* The end of an allowed request: which decision it closes, how it ended,
 * the status, the bytes each way and how long it took. */
static int put_result(struct buf *b, json_t *obj)
{
	const char *decision = obj_str(obj, "decision");
	int r = buf_printf(b, "result  for #%" JSON_INTEGER_FORMAT "  ", obj_int(obj, "request_seq"));
	if (r == 0)
		r = put_clean(b, decision ? decision : "?");
	if (r == 0)
		r = put_totals(b, obj);
	return r;
}

/* Events other than requests (start, stop, reload, rotate): the event
 * word, then whatever the record says about it. */
static int put_event(struct buf *b, json_t *obj)
{
	int r = put_padded(b, obj_str(obj, "event"), 5);
	if (r == 0)
		r = put_opt(b, obj, "credential", "credential");
	if (r == 0)
		r = put_opt(b, obj, "listener", "listener");
	if (r == 0)
		r = put_opt(b, obj, "client", "client");
	if (r == 0)
		r = put_opt(b, obj, "decision", "decision");
	if (r == 0)
		r = put_opt(b, obj, "reason", "reason");
	if (r == 0)
		r = put_detail(b, obj);
	return r;
}

static int show_record(FILE *out, json_t *obj)
{
	const char *t = obj_str(obj, "time");
	struct buf b;
	int r;

	buf_init(&b, 8 * VERIFY_MAX_LINE);
	/* "2026-11-23T12:34:56.123456Z" is shown to the second, in UTC. */
	if (strlen(t) >= 19 && t[10] == 'T') {
		char day[20];
		snprintf(day, sizeof(day), "%.10s %.8s", t, t + 11);
		r = put_clean(&b, day);
	} else {
		r = put_clean(&b, t);
	}
	if (r == 0)
		r = buf_printf(&b, "  #%-5" JSON_INTEGER_FORMAT "  ", obj_int(obj, "seq"));
	if (r == 0)
		r = streq(obj_str(obj, "event"), "request")  ? put_request(&b, obj)
		    : streq(obj_str(obj, "event"), "result") ? put_result(&b, obj)
		                                             : put_event(&b, obj);
	if (r == 0)
		r = buf_append(&b, "\n", 1);
	if (r == 0 && fwrite(b.data, 1, b.len, out) != b.len)
		r = -EIO;
	buf_free(&b);
	return r;
}

/* ---- the walk shared by verify and show ---- */

static int walk(const char *path, FILE *out, bool show)
{
	/* O_NONBLOCK: opening a named pipe that no one writes to would wait
	 * for a writer forever. Reading then blocks as usual, so a pipe that
	 * has a writer (`<(cat log)`) is read to its end. */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct chain c = { 0 };
	char why[1024] = "";
	uint64_t lineno = 0;
	int r;

	if (fd < 0 || fcntl(fd, F_SETFL, 0) < 0) {
		r = -errno;
		fprintf(out, "%s: %s\n", path, strerror(-r));
		return r;
	}
	memset(c.prev, '0', HASH_HEX);
	c.prev[HASH_HEX] = '\0';

	struct line_reader *lr = malloc(sizeof(*lr));
	if (!lr)
		return -ENOMEM;
	lr->fd = fd;
	lr->pos = lr->end = 0;
	lr->eof = false;
	buf_init(&lr->line, VERIFY_MAX_LINE);

	for (;;) {
		r = reader_next(lr);
		if (r == LINE_EOF)
			break;
		lineno++;
		if (r == -EFBIG) {
			snprintf(why, sizeof(why), "%s", "line longer than 1 MiB");
			r = -EBADMSG;
		} else if (r == LINE_PARTIAL) {
			snprintf(why, sizeof(why), "%s",
			         "the last line is incomplete (no newline at the end): "
			         "a write was cut short or the file was truncated");
			r = -EBADMSG;
		} else if (r == LINE_FULL) {
			json_t *obj = NULL;
			r = check_line(&c, lr->line.data ? lr->line.data : "", lr->line.len, &obj, why, sizeof(why));
			if (r == 0 && show)
				r = show_record(out, obj);
			json_decref(obj);
		}
		if (r == -EBADMSG) {
			fprintf(out, "%s:%" PRIu64 ": %s\n", path, lineno, why);
			break;
		}
		if (r < 0) {
			fprintf(out, "%s:%" PRIu64 ": %s\n", path, lineno, strerror(-r));
			break;
		}
	}
	if (r == LINE_EOF) {
		r = 0;
		if (c.records == 0)
			fprintf(out, "%s: 0 records, chain intact\n", path);
		else
			fprintf(out, "%s: %" PRIu64 " records, chain intact; last seq %" PRIu64 ", last hash %s\n",
			        path, c.records, c.seq - 1, c.prev);
	}
	buf_free(&lr->line);
	free(lr);
	return r;
}

int audit_verify(const char *path, FILE *out)
{
	return walk(path, out, false);
}

int audit_show(const char *path, FILE *out)
{
	return walk(path, out, true);
}
