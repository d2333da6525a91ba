/* Unit tests for the audit log: the writer (format, chain, failure
 * behaviour, threads) and the reader (verify, show). Damaged files come
 * first: every byte flipped, lines deleted, moved, cut. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "common/encode.h"

static char tmpdir[64];
static int file_counter;

static const struct audit_record req_allow = {
	.event = "request",
	.listener = "127.0.0.1:8080",
	.client = "127.0.0.1:50000",
	.method = "GET",
	.scheme = "https",
	.host = "api.github.com",
	.port = 443,
	.path = "/repos/acme/app",
	.route = 0,
	.credential = "github",
	.decision = "allow",
};

/* The end of the request allowed by req_allow when that was record 1. */
static const struct audit_record res_ok = {
	.event = "result",
	.request_seq = 1,
	.route = -1,
	.decision = "allow",
	.status = 200,
	.totals = true,
	.bytes_in = 0,
	.bytes_out = 1234,
	.duration_us = 3100,
};

static const struct audit_record req_deny = {
	.event = "request",
	.listener = "127.0.0.1:8080",
	.method = "POST",
	.scheme = "https",
	.host = "evil.example",
	.port = 8443,
	.path = "/upload",
	.route = -1,
	.decision = "deny",
	.reason = "host",
	.detail = "no route allows host evil.example",
	.status = 403,
	.totals = true,
};

static const struct audit_record ev_start = {
	.event = "start",
	.listener = "127.0.0.1:8080",
	.route = -1,
};

/* ---- helpers ---- */

static char *new_path(void)
{
	char *p = NULL;
	assert_true(asprintf(&p, "%s/log%d.jsonl", tmpdir, file_counter++) > 0);
	return p;
}

static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char *data = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&data, &len);
	char block[4096];
	size_t n;
	while ((n = fread(block, 1, sizeof(block), f)) > 0)
		assert_int_equal(fwrite(block, 1, n, m), n);
	fclose(f);
	fclose(m);
	*ret_len = len;
	return data;
}

static void spit(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Runs verify (or show) with its output captured. */
static int run_capture(int (*fn)(const char *, FILE *), const char *path, char **ret_out)
{
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);
	int r = fn(path, m);
	fclose(m);
	*ret_out = out;
	return r;
}

static int verify_capture(const char *path, char **ret_out)
{
	return run_capture(audit_verify, path, ret_out);
}

static void write_records(const char *path, int n)
{
	struct audit_log *log = NULL;
	char err[512] = "";
	int r = audit_open(path, &log, err, sizeof(err));
	if (r < 0)
		fail_msg("audit_open: %s", err);
	for (int i = 0; i < n; i++) {
		static const struct audit_record *const cycle[] = { &ev_start, &req_allow, &res_ok, &req_deny };
		const struct audit_record *rec = cycle[i % 4];
		assert_int_equal(audit_write(log, rec), 0);
	}
	assert_true(audit_healthy(log));
	audit_close(log);
}

/* The failing line number in "PATH:LINE: ...", or 0 if the output is a
 * summary. */
static long failing_line(const char *path, const char *out)
{
	size_t pl = strlen(path);
	if (strncmp(out, path, pl) != 0 || out[pl] != ':' || out[pl + 1] < '0' || out[pl + 1] > '9')
		return 0;
	return strtol(out + pl + 1, NULL, 10);
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL), 1);
	hex_encode(md, 32, out);
}

static size_t count_char(const char *p, size_t n, char c)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += p[i] == c;
	return k;
}

/* Start offsets of each line (lines[count] = total length). */
static size_t split_lines(const char *p, size_t n, size_t *starts, size_t max)
{
	size_t k = 0;
	starts[k++] = 0;
	for (size_t i = 0; i < n && k < max; i++)
		if (p[i] == '\n' && i + 1 <= n)
			starts[k++] = i + 1;
	return k - 1;
}

static int setup_dir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kw-audit-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int teardown_dir(void **state)
{
	return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- audit_open refusals ---- */

static void test_open_refuses_non_regular(void **state)
{
	char err[512];
	struct audit_log *log = NULL;
	char link[128], fifo[128], dir[128];

	snprintf(link, sizeof(link), "%s/link.jsonl", tmpdir);
	snprintf(fifo, sizeof(fifo), "%s/fifo.jsonl", tmpdir);
	snprintf(dir, sizeof(dir), "%s/dir.jsonl", tmpdir);
	char *target = new_path();
	write_records(target, 1);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(mkdir(dir, 0700), 0);

	static const struct {
		const char *name;
		int err;
		const char *says;
	} cases[] = {
		{ "link", -ELOOP, "symbolic link" },
		{ "fifo", -EINVAL, "not a regular file" },
		{ "dir", -EISDIR, "Is a directory" },
		{ "/dev/null", -EINVAL, "not a regular file" },
		{ "/nonexistent-dir/x.jsonl", -ENOENT, "No such file" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const char *p = streq(cases[i].name, "link")   ? link
		                : streq(cases[i].name, "fifo") ? fifo
		                : streq(cases[i].name, "dir")  ? dir
		                                               : cases[i].name;
		err[0] = '\0';
		log = NULL;
		int r = audit_open(p, &log, err, sizeof(err));
		if (r != cases[i].err)
			fail_msg("%s: got %d, want %d (%s)", p, r, cases[i].err, err);
		assert_null(log);
		assert_non_null(strstr(err, p));
		if (!strstr(err, cases[i].says))
			fail_msg("%s: message \"%s\" lacks \"%s\"", p, err, cases[i].says);
	}
	free(target);
}

static void test_open_refuses_damaged_tail(void **state)
{
	static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
	char valid[256];
	snprintf(valid, sizeof(valid), "{\"seq\":0,\"time\":\"t\",\"event\":\"start\",\"prev\":\"%s\"}\n", zeros);

	char *long_line = malloc(1024 * 1024 + 64);
	memset(long_line, ' ', 1024 * 1024 + 62);
	memcpy(long_line, "{\"seq\":0", 8);
	long_line[1024 * 1024 + 62] = '\n';

	struct {
		const char *name;
		const char *data;
		size_t len;
		const char *says;
	} cases[] = {
		{ "no newline", "{\"seq\":0", 8, "incomplete" },
		{ "valid then cut", NULL, 0, "incomplete" },
		{ "empty line", "\n", 1, "not an audit record" },
		{ "two newlines", NULL, 0, "not an audit record" },
		{ "not json", "hello\n", 6, "not an audit record" },
		{ "array", "[1,2]\n", 6, "not an audit record" },
		{ "no prev", "{\"seq\":0}\n", 10, "not an audit record" },
		{ "short prev", "{\"seq\":0,\"prev\":\"00\"}\n", 22, "not an audit record" },
		{ "negative seq", NULL, 0, "not an audit record" },
		{ "string seq", NULL, 0, "not an audit record" },
		{ "upper-case hash", NULL, 0, "not an audit record" },
		{ "longer than 1 MiB", long_line, 1024 * 1024 + 63, "longer than 1 MiB" },
	};
	char cut[512], twice[512], neg[256], strseq[256], upper[256];
	snprintf(cut, sizeof(cut), "%s{\"seq\":1,\"time\"", valid);
	snprintf(twice, sizeof(twice), "%s\n", valid);
	snprintf(neg, sizeof(neg), "{\"seq\":-1,\"prev\":\"%s\"}\n", zeros);
	snprintf(strseq, sizeof(strseq), "{\"seq\":\"0\",\"prev\":\"%s\"}\n", zeros);
	snprintf(upper, sizeof(upper), "{\"seq\":0,\"prev\":\"%.63sA\"}\n", zeros);
	cases[1].data = cut;
	cases[3].data = twice;
	cases[8].data = neg;
	cases[9].data = strseq;
	cases[10].data = upper;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		if (cases[i].len == 0)
			cases[i].len = strlen(cases[i].data);

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *path = new_path();
		char err[1024] = "";
		struct audit_log *log = NULL;
		spit(path, cases[i].data, cases[i].len);

		int r = audit_open(path, &log, err, sizeof(err));
		if (r != -EBADMSG)
			fail_msg("%s: got %d (%s)", cases[i].name, r, err);
		assert_null(log);
		if (!strstr(err, cases[i].says))
			fail_msg("%s: \"%s\" lacks \"%s\"", cases[i].name, err, cases[i].says);
		/* The message tells the operator what to do next. */
		char hint[256];
		snprintf(hint, sizeof(hint), "keyward audit verify %s", path);
		assert_non_null(strstr(err, hint));
		assert_non_null(strstr(err, "mv "));

		/* A refused file is left alone. */
		size_t len;
		char *after = slurp(path, &len);
		assert_int_equal(len, cases[i].len);
		assert_memory_equal(after, cases[i].data, len);
		free(after);
		free(path);
	}
	free(long_line);
}

static void test_open_refuses_second_writer(void **state)
{
	char *path = new_path();
	char err[512] = "";
	struct audit_log *a = NULL, *b = NULL;
	assert_int_equal(audit_open(path, &a, err, sizeof(err)), 0);
	assert_int_equal(audit_open(path, &b, err, sizeof(err)), -EBUSY);
	assert_null(b);
	assert_non_null(strstr(err, "another keyward"));
	audit_close(a);
	assert_int_equal(audit_open(path, &b, err, sizeof(err)), 0);
	audit_close(b);
	free(path);
}

static void test_null_arguments(void **state)
{
	struct audit_record no_event = req_allow;
	no_event.event = NULL;
	char *path = new_path();
	struct audit_log *log = NULL;

	audit_close(NULL);
	assert_false(audit_healthy(NULL));
	assert_int_equal(audit_write(NULL, &req_allow), -EINVAL);
	/* A NULL errbuf is allowed. */
	assert_int_equal(audit_open(path, &log, NULL, 0), 0);
	assert_int_equal(audit_write(log, NULL), -EINVAL);
	assert_int_equal(audit_write(log, &no_event), -EINVAL);
	audit_close(log);
	assert_int_equal(audit_open("/dev/null", &log, NULL, 0), -EINVAL);
	free(path);
}

/* ---- verify: damaged files ---- */

static void test_verify_missing_file(void **state)
{
	char path[128], *out;
	snprintf(path, sizeof(path), "%s/does-not-exist.jsonl", tmpdir);
	assert_int_equal(verify_capture(path, &out), -ENOENT);
	assert_non_null(strstr(out, path));
	assert_non_null(strstr(out, "No such file"));
	free(out);
}

/* Flip each byte of a 5-record file, with three masks (low bit, high bit:
 * invalid UTF-8, case bit). A change in line k shows at line k (the line
 * itself no longer checks) or at line k+1 (its prev no longer matches).
 * The last line has no successor: a change that keeps it a valid record
 * is caught only through the last hash verify prints, so assert that it
 * differs from the one printed for the original file. */
static void test_verify_flip_every_byte(void **state)
{
	static const unsigned char masks[] = { 0x01, 0x80, 0x20 };
	char *path = new_path(), *out;
	size_t len, starts[8];
	write_records(path, 5);
	char *orig = slurp(path, &len);
	assert_int_equal(split_lines(orig, len, starts, ARRAY_SIZE(starts)), 5);

	assert_int_equal(verify_capture(path, &out), 0);
	char *orig_summary = out;
	assert_non_null(strstr(orig_summary, "5 records, chain intact; last seq 4"));

	char *copy = malloc(len);
	char *flipped = new_path();
	unsigned caught_by_hash = 0, total = 0;
	for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
		for (size_t off = 0; off < len; off++) {
			long k = 1;
			while (starts[k] <= off)
				k++;
			memcpy(copy, orig, len);
			copy[off] ^= (char)masks[m];
			spit(flipped, copy, len);
			int r = verify_capture(flipped, &out);
			long at = failing_line(flipped, out);
			total++;
			if (r == 0) {
				if (k != 5)
					fail_msg("byte %zu (line %ld) ^%02x not detected: %s", off, k, masks[m], out);
				/* Same seq, different last hash. */
				assert_non_null(strstr(out, "last seq 4"));
				assert_string_not_equal(strstr(out, "last hash"), strstr(orig_summary, "last hash"));
				caught_by_hash++;
			} else {
				assert_int_equal(r, -EBADMSG);
				if (at != k && at != k + 1)
					fail_msg("byte %zu (line %ld) ^%02x reported at line %ld: %s", off, k, masks[m],
					         at, out);
			}
			free(out);
		}
	}
	print_message("%u of %u flips caught only through the last hash\n", caught_by_hash, total);
	free(copy);
	free(orig);
	free(orig_summary);
	free(flipped);
	free(path);
}

/* Builds a file from the lines of a 5-record log in the given order. */
static void rearrange(const char *src, const char *dst, const int *order, size_t n)
{
	size_t len, starts[8];
	char *data = slurp(src, &len);
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 5);
	FILE *f = fopen(dst, "wb");
	assert_non_null(f);
	for (size_t i = 0; i < n; i++) {
		int l = order[i];
		fwrite(data + starts[l], 1, starts[l + 1] - starts[l], f);
	}
	assert_int_equal(fclose(f), 0);
	free(data);
}

static void test_verify_rearranged_lines(void **state)
{
	static const struct {
		const char *name;
		int order[6];
		size_t n;
		long line;
		const char *says;
	} cases[] = {
		{ "middle deleted", { 0, 1, 3, 4 }, 4, 3, "expected seq 2, found 3" },
		{ "first deleted", { 1, 2, 3, 4 }, 4, 1, "expected seq 0, found 1" },
		{ "swapped", { 0, 2, 1, 3, 4 }, 5, 2, "seq out of order" },
		{ "last two swapped", { 0, 1, 2, 4, 3 }, 5, 4, "seq out of order" },
		{ "replayed", { 0, 1, 2, 2, 3, 4 }, 6, 4, "expected seq 3, found 2" },
	};
	char *src = new_path();
	write_records(src, 5);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *dst = new_path(), *out;
		rearrange(src, dst, cases[i].order, cases[i].n);
		assert_int_equal(verify_capture(dst, &out), -EBADMSG);
		if (failing_line(dst, out) != cases[i].line || !strstr(out, cases[i].says))
			fail_msg("%s: %s", cases[i].name, out);
		free(out);
		free(dst);
	}
	free(src);
}

/* A record whose seq was renumbered to hide a deletion still breaks the
 * chain: the prev it carries is the hash of the deleted line. */
static void test_verify_deletion_with_renumbering(void **state)
{
	char *src = new_path(), *dst = new_path(), *out;
	static const int order[] = { 0, 1, 3, 4 };
	write_records(src, 5);
	rearrange(src, dst, order, ARRAY_SIZE(order));
	size_t len;
	char *data = slurp(dst, &len);
	char *p = strstr(data, "\"seq\":3");
	assert_non_null(p);
	p[6] = '2';
	spit(dst, data, len);
	assert_int_equal(verify_capture(dst, &out), -EBADMSG);
	assert_int_equal(failing_line(dst, out), 3);
	assert_non_null(strstr(out, "chain broken"));
	assert_non_null(strstr(out, "expected prev "));
	free(out);
	free(data);
	free(src);
	free(dst);
}

static void test_verify_truncated_last_line(void **state)
{
	char *path = new_path(), *out, err[1024] = "";
	size_t len;
	struct audit_log *log = NULL;
	write_records(path, 5);
	char *data = slurp(path, &len);
	/* Cut in the middle of the last record, and just its newline. */
	size_t cuts[] = { len - 1, len - 20 }; /* truncate only shrinks */
	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
		assert_int_equal(truncate(path, (off_t)cuts[i]), 0);
		assert_int_equal(verify_capture(path, &out), -EBADMSG);
		assert_int_equal(failing_line(path, out), 5);
		assert_non_null(strstr(out, "incomplete"));
		free(out);
		assert_int_equal(audit_open(path, &log, err, sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "incomplete"));
	}
	/* Cut at a line boundary: not detectable from the file alone (see
	 * docs/audit.md); verify passes with the shorter chain. */
	size_t starts[8];
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 5);
	spit(path, data, starts[4]);
	assert_int_equal(verify_capture(path, &out), 0);
	assert_non_null(strstr(out, "4 records, chain intact; last seq 3"));
	free(out);
	free(data);
	free(path);
}

static void test_verify_bad_lines(void **state)
{
	static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
	static const struct {
		const char *name;
		const char *fmt; /* %s: 64 zeros */
		const char *says;
	} cases[] = {
		{ "not json", "hello\n", "not valid JSON" },
		{ "empty line", "\n", "not valid JSON" },
		{ "array", "[]\n", "not a JSON object" },
		{ "no seq", "{\"time\":\"t\",\"event\":\"e\",\"prev\":\"%s\"}\n", "no integer \"seq\"" },
		{ "float seq", "{\"seq\":0.0,\"time\":\"t\",\"event\":\"e\",\"prev\":\"%s\"}\n", "no integer \"seq\"" },
		{ "no prev", "{\"seq\":0,\"time\":\"t\",\"event\":\"e\"}\n", "no string \"prev\"" },
		{ "no time", "{\"seq\":0,\"event\":\"e\",\"prev\":\"%s\"}\n", "no string \"time\"" },
		{ "int event", "{\"seq\":0,\"time\":\"t\",\"event\":1,\"prev\":\"%s\"}\n", "no string \"event\"" },
		{ "bad first prev", "{\"seq\":0,\"time\":\"t\",\"event\":\"e\",\"prev\":\"1%.63s\"}\n",
		  "does not start the chain" },
		/* Two values under one key: readers could disagree on which counts. */
		{ "duplicate key",
		  "{\"seq\":0,\"time\":\"t\",\"event\":\"e\",\"decision\":\"allow\","
		  "\"decision\":\"deny\",\"prev\":\"%s\"}\n",
		  "duplicate" },
		{ "invalid utf-8", "{\"seq\":0,\"time\":\"t\",\"event\":\"\xff\",\"prev\":\"%s\"}\n",
		  "not valid JSON" },
		{ "trailing garbage", "{\"seq\":0,\"time\":\"t\",\"event\":\"e\",\"prev\":\"%s\"} x\n",
		  "not valid JSON" },
		/* A result closes an earlier decision: never itself or a later one. */
		{ "result without request_seq", "{\"seq\":0,\"time\":\"t\",\"event\":\"result\",\"prev\":\"%s\"}\n",
		  "request_seq" },
		{ "result naming itself",
		  "{\"seq\":0,\"time\":\"t\",\"event\":\"result\",\"request_seq\":0,\"prev\":\"%s\"}\n",
		  "request_seq" },
		{ "result naming a negative seq",
		  "{\"seq\":0,\"time\":\"t\",\"event\":\"result\",\"request_seq\":-1,\"prev\":\"%s\"}\n",
		  "request_seq" },
		{ "result with a string request_seq",
		  "{\"seq\":0,\"time\":\"t\",\"event\":\"result\",\"request_seq\":\"0\",\"prev\":\"%s\"}\n",
		  "request_seq" },
		/* What a tampered line holds is quoted in the message, never
		 * acted on by the operator's terminal (checked for every case). */
		{ "escapes in prev",
		  "{\"seq\":0,\"time\":\"t\",\"event\":\"e\",\"prev\":\"\\u001b]0;TITLE\\u0007\\u001b[2J%.8s\"}\n",
		  "does not start the chain" },
		{ "escape bytes outside JSON", "{\"seq\":0,\x1b[2J\x07\n", "not valid JSON" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *path = new_path(), *out, line[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		int n = snprintf(line, sizeof(line), cases[i].fmt, zeros);
#pragma GCC diagnostic pop
		spit(path, line, (size_t)n);
		assert_int_equal(verify_capture(path, &out), -EBADMSG);
		if (failing_line(path, out) != 1 || !strstr(out, cases[i].says) || strpbrk(out, "\x1b\x07"))
			fail_msg("%s: %s", cases[i].name, out);
		free(out);
		free(path);
	}
}

static void test_verify_line_too_long(void **state)
{
	char *path = new_path(), *out;
	write_records(path, 2);
	FILE *f = fopen(path, "ab");
	for (size_t i = 0; i < 1024 * 1024 + 1; i++)
		fputc('x', f);
	fputc('\n', f);
	fclose(f);
	assert_int_equal(verify_capture(path, &out), -EBADMSG);
	assert_int_equal(failing_line(path, out), 3);
	assert_non_null(strstr(out, "longer than 1 MiB"));
	free(out);
	free(path);
}

/* ---- verify and the writer: intact files ---- */

static void test_verify_empty_file(void **state)
{
	char *path = new_path(), *out;
	spit(path, "", 0);
	assert_int_equal(verify_capture(path, &out), 0);
	char want[256];
	snprintf(want, sizeof(want), "%s: 0 records, chain intact\n", path);
	assert_string_equal(out, want);
	free(out);
	free(path);
}

static bool time_ok(const char *t)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	if (strlen(t) != strlen(shape))
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
			return false;
	return true;
}

/* Every key, in order; absent ones omitted; numbers where they belong. */
static void test_record_format(void **state)
{
	static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
	char *path = new_path();
	struct audit_log *log = NULL;
	char err[256];
	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	struct audit_batch *b = NULL;
	uint64_t first = 99;
	struct audit_record res = res_ok;
	res.request_seq = 0;
	assert_int_equal(audit_batch_new(&b), 0);
	assert_int_equal(audit_batch_add(b, &req_allow), 0);
	assert_int_equal(audit_batch_add(b, &res), 1);
	assert_int_equal(audit_batch_count(b), 2);
	assert_int_equal(audit_batch_write(log, b, &first), 0);
	assert_int_equal(first, 0);
	assert_int_equal(audit_batch_count(b), 0);
	audit_batch_free(b);
	assert_int_equal(audit_write(log, &req_deny), 0);
	assert_int_equal(audit_write(log, &ev_start), 0);
	audit_close(log);

	size_t len, starts[8];
	char *data = slurp(path, &len);
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 4);
	char h[4][65];
	for (int i = 0; i < 4; i++)
		sha256_hex(data + starts[i], starts[i + 1] - starts[i] - 1, h[i]);

	/* The decision of an allowed request knows nothing of its end; the
	 * result names it and carries status, bytes and duration; a denial is
	 * both in one. */
	const char *fmt[4] = {
		"{\"seq\":0,\"time\":\"%s\",\"event\":\"request\",\"listener\":\"127.0.0.1:8080\","
		"\"client\":\"127.0.0.1:50000\",\"method\":\"GET\",\"scheme\":\"https\","
		"\"host\":\"api.github.com\",\"port\":443,\"path\":\"/repos/acme/app\",\"route\":0,"
		"\"credential\":\"github\",\"decision\":\"allow\",\"prev\":\"%s\"}",
		"{\"seq\":1,\"time\":\"%s\",\"event\":\"result\",\"request_seq\":0,\"decision\":\"allow\","
		"\"status\":200,\"bytes_in\":0,\"bytes_out\":1234,\"duration_us\":3100,\"prev\":\"%s\"}",
		"{\"seq\":2,\"time\":\"%s\",\"event\":\"request\",\"listener\":\"127.0.0.1:8080\","
		"\"method\":\"POST\",\"scheme\":\"https\",\"host\":\"evil.example\",\"port\":8443,"
		"\"path\":\"/upload\",\"decision\":\"deny\",\"reason\":\"host\","
		"\"detail\":\"no route allows host evil.example\",\"status\":403,\"bytes_in\":0,"
		"\"bytes_out\":0,\"duration_us\":0,\"prev\":\"%s\"}",
		"{\"seq\":3,\"time\":\"%s\",\"event\":\"start\",\"listener\":\"127.0.0.1:8080\","
		"\"prev\":\"%s\"}",
	};
	for (int i = 0; i < 4; i++) {
		const char *line = data + starts[i];
		const char *t = strstr(line, "\"time\":\"") + 8;
		char stamp[32] = "";
		memcpy(stamp, t, 27);
		assert_true(time_ok(stamp));
		char want[1024];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		snprintf(want, sizeof(want), fmt[i], stamp, i == 0 ? zeros : h[i - 1]);
#pragma GCC diagnostic pop
		assert_int_equal(starts[i + 1] - starts[i] - 1, strlen(want));
		assert_memory_equal(line, want, strlen(want));
	}
	free(data);
	free(path);
}

static void test_write_reopen_continue(void **state)
{
	char *path = new_path(), *out;
	write_records(path, 3);
	write_records(path, 2);
	write_records(path, 0);
	write_records(path, 1);

	assert_int_equal(verify_capture(path, &out), 0);
	size_t len, starts[8];
	char *data = slurp(path, &len);
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 6);
	char last[65], want[256];
	sha256_hex(data + starts[5], starts[6] - starts[5] - 1, last);
	snprintf(want, sizeof(want), "%s: 6 records, chain intact; last seq 5, last hash %s\n", path, last);
	assert_string_equal(out, want);
	for (int i = 0; i < 6; i++) {
		char seq[32];
		snprintf(seq, sizeof(seq), "{\"seq\":%d,", i);
		assert_memory_equal(data + starts[i], seq, strlen(seq));
	}
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	free(data);
	free(out);
	free(path);
}

/* The child makes writes fail with EFBIG through RLIMIT_FSIZE (a partial
 * write up to the limit, then the error), checks the file is as before,
 * lifts the limit and writes again. Exit status: 0 or the failed step. */
static int efbig_child(const char *path, size_t room)
{
	struct audit_log *log = NULL;
	struct rlimit old, lim;
	size_t before_len, after_len;

	signal(SIGXFSZ, SIG_IGN);
	if (audit_open(path, &log, NULL, 0) < 0)
		return 10;
	char *before = slurp(path, &before_len);
	if (getrlimit(RLIMIT_FSIZE, &old) < 0)
		return 11;
	lim = old;
	lim.rlim_cur = before_len + room;
	if (setrlimit(RLIMIT_FSIZE, &lim) < 0)
		return 12;
	for (int i = 0; i < 3; i++) {
		if (audit_write(log, &req_deny) != -EFBIG)
			return 13;
		if (audit_healthy(log))
			return 14;
	}
	/* A batch fails whole: none of its records in the file, none took a
	 * seq, and the batch is empty afterwards. */
	struct audit_batch *b = NULL;
	uint64_t first = 42;
	if (audit_batch_new(&b) < 0 || audit_batch_add(b, &req_allow) != 0 || audit_batch_add(b, &res_ok) != 1)
		return 18;
	if (audit_batch_write(log, b, &first) != -EFBIG || first != 42 || audit_batch_count(b) != 0)
		return 19;
	audit_batch_free(b);
	char *after = slurp(path, &after_len);
	if (after_len != before_len || memcmp(before, after, before_len) != 0)
		return 15;
	if (setrlimit(RLIMIT_FSIZE, &old) < 0)
		return 16;
	if (audit_write(log, &req_allow) != 0 || !audit_healthy(log))
		return 17;
	audit_close(log);
	free(before);
	free(after);
	return 0;
}

static void test_write_failure_leaves_file_intact(void **state)
{
	static const size_t rooms[] = { 0, 1, 50 };
	for (size_t i = 0; i < ARRAY_SIZE(rooms); i++) {
		char *path = new_path(), *out;
		write_records(path, 3);
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(efbig_child(path, rooms[i]));
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		if (WEXITSTATUS(st) != 0)
			fail_msg("room %zu: child failed at step %d", rooms[i], WEXITSTATUS(st));
		/* The failed records took no seq: the one written after follows on. */
		assert_int_equal(verify_capture(path, &out), 0);
		assert_non_null(strstr(out, "4 records, chain intact; last seq 3"));
		free(out);
		free(path);
	}
}

struct writer_arg {
	struct audit_log *log;
	int id;
};

static void *writer_thread(void *p)
{
	struct writer_arg *a = p;
	char detail[64];
	struct audit_record rec = req_allow;
	rec.detail = detail;
	for (int i = 0; i < 500; i++) {
		snprintf(detail, sizeof(detail), "thread %d record %d", a->id, i);
		if (audit_write(a->log, &rec) != 0)
			return (void *)1;
	}
	return NULL;
}

/* Runs fn in 4 threads on one log at path, then checks the chain and the
 * summary verify prints. */
static void run_writers(const char *path, void *(*fn)(void *), const char *summary)
{
	char *out, err[256];
	struct audit_log *log = NULL;
	pthread_t th[4];
	struct writer_arg args[4];
	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct writer_arg){ log, i };
		assert_int_equal(pthread_create(&th[i], NULL, fn, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *res;
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_null(res);
	}
	audit_close(log);
	assert_int_equal(verify_capture(path, &out), 0);
	if (!strstr(out, summary))
		fail_msg("%s", out);
	free(out);
}

static void test_concurrent_writers(void **state)
{
	char *path = new_path();
	run_writers(path, writer_thread, "2000 records, chain intact; last seq 1999");
	free(path);
}

/* Strings from the sandbox: quotes, newlines, control characters, escape
 * sequences, invalid UTF-8. Each record stays one line, the chain holds,
 * and the values read back as written (invalid bytes as U+00XX). */
static void test_hostile_strings(void **state)
{
	static const char path_in[] = "/a\"b\\c\nd\re\tf\x01\x1b[31m\xff\xfe\xc0\x80"
	                              "\xed\xa0\x80\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa8";
	static const char path_back[] = "/a\"b\\c\nd\re\tf\x01\x1b[31m\xc3\xbf\xc3\xbe\xc3\x80\xc2\x80"
	                                "\xc3\xad\xc2\xa0\xc2\x80\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
	                                "\xe2\x80\xa8";
	static const char detail_in[] = "x\n{\"seq\":99,\"prev\":\"0\"}\n\"}";
	char *path = new_path(), *out, err[256];
	struct audit_log *log = NULL;
	struct audit_record rec = req_deny;
	rec.path = path_in;
	rec.detail = detail_in;
	rec.host = "h\"\n";
	rec.reason = "\x7f";

	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(audit_write(log, &rec), 0);
	audit_close(log);

	size_t len, starts[8];
	char *data = slurp(path, &len);
	assert_int_equal(count_char(data, len, '\n'), 3);
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 3);
	json_error_t jerr;
	json_t *obj = json_loadb(data, starts[1] - 1, 0, &jerr);
	assert_non_null(obj);
	assert_string_equal(json_string_value(json_object_get(obj, "path")), path_back);
	assert_string_equal(json_string_value(json_object_get(obj, "detail")), detail_in);
	assert_string_equal(json_string_value(json_object_get(obj, "host")), "h\"\n");
	json_decref(obj);
	assert_int_equal(verify_capture(path, &out), 0);
	assert_non_null(strstr(out, "3 records, chain intact"));
	free(out);

	/* show prints them as text: no raw escape or newline reaches the
	 * terminal, one line per record plus the summary. */
	assert_int_equal(run_capture(audit_show, path, &out), 0);
	assert_null(strchr(out, '\x1b'));
	assert_null(strchr(out, '\r'));
	assert_null(strchr(out, '\x7f'));
	assert_null(strstr(out, "\xc2\x80"));
	assert_non_null(strstr(out, "\\x1b[31m"));
	assert_int_equal(count_char(out, strlen(out), '\n'), 4);
	free(out);
	free(data);
	free(path);
}

/* Long strings are cut with an ellipsis so that a record always fits. */
static void test_long_strings_cut(void **state)
{
	char *path = new_path(), *out, err[256];
	struct audit_log *log = NULL;
	struct audit_record rec = req_deny;

	size_t big = 100000;
	char *long_path = malloc(big + 1);
	memset(long_path, 'a', big);
	long_path[big] = '\0';
	/* "x" then two-byte characters: byte 4096 falls inside one. */
	char *long_detail = malloc(big + 2);
	long_detail[0] = 'x';
	for (size_t i = 1; i + 1 < big; i += 2)
		memcpy(long_detail + i, "\xc3\xa9", 2);
	long_detail[big - 1] = '\0';
	/* Worst case for escaping: every byte becomes \u00XX. */
	char *controls = malloc(big + 1);
	memset(controls, 0x01, big);
	controls[big] = '\0';

	rec.path = long_path;
	rec.detail = long_detail;
	rec.host = controls;
	rec.listener = controls;
	rec.client = controls;
	rec.method = controls;
	rec.scheme = controls;
	rec.credential = controls;
	rec.decision = controls;
	rec.reason = controls;
	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	assert_int_equal(audit_write(log, &rec), 0);
	rec.path = controls;
	rec.detail = controls;
	rec.event = controls;
	assert_int_equal(audit_write(log, &rec), 0);
	audit_close(log);

	assert_int_equal(verify_capture(path, &out), 0);
	free(out);
	size_t len;
	char *data = slurp(path, &len);
	assert_true(len < 2 * 65536);
	json_error_t jerr;
	json_t *obj = json_loadb(data, (size_t)(strchr(data, '\n') - data), 0, &jerr);
	assert_non_null(obj);
	const char *p = json_string_value(json_object_get(obj, "path"));
	assert_int_equal(strlen(p), 4096 + 3);
	assert_memory_equal(p + 4096, "\xe2\x80\xa6", 3);
	const char *d = json_string_value(json_object_get(obj, "detail"));
	assert_int_equal(strlen(d), 4095 + 3);
	assert_memory_equal(d + 4093, "\xc3\xa9\xe2\x80\xa6", 5);
	const char *h = json_string_value(json_object_get(obj, "host"));
	assert_int_equal(strlen(h), 256 + 3);
	json_decref(obj);
	free(data);
	free(long_path);
	free(long_detail);
	free(controls);
	free(path);
}

/* At the cut and one byte past it: a string of exactly the limit is
 * written whole, one byte longer is cut; a single byte to escape anywhere
 * in a record changes nothing but that string. */
static void test_cut_boundary(void **state)
{
	char *path = new_path(), err[256];
	struct audit_log *log = NULL;
	struct audit_record rec = req_deny;
	char host[258];
	memset(host, 'a', 257);
	host[257] = '\0';

	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	host[256] = '\0';
	rec.host = host;
	assert_int_equal(audit_write(log, &rec), 0);
	host[256] = 'a';
	assert_int_equal(audit_write(log, &rec), 0);
	rec.host = "api.test";
	rec.path = "/a\"b";
	assert_int_equal(audit_write(log, &rec), 0);
	audit_close(log);

	size_t len, starts[8];
	char *data = slurp(path, &len);
	assert_int_equal(split_lines(data, len, starts, ARRAY_SIZE(starts)), 3);
	const char *want[3] = { NULL, NULL, "\"host\":\"api.test\",\"port\":8443,\"path\":\"/a\\\"b\",\"decision\"" };
	for (int i = 0; i < 3; i++) {
		json_error_t jerr;
		json_t *obj = json_loadb(data + starts[i], starts[i + 1] - starts[i] - 1, 0, &jerr);
		assert_non_null(obj);
		const char *h = json_string_value(json_object_get(obj, "host"));
		if (i == 0)
			assert_int_equal(strlen(h), 256);
		if (i == 1) {
			assert_int_equal(strlen(h), 256 + 3);
			assert_memory_equal(h + 256, "\xe2\x80\xa6", 3);
		}
		json_decref(obj);
		if (want[i])
			assert_non_null(memmem(data + starts[i], starts[i + 1] - starts[i], want[i], strlen(want[i])));
	}
	char *out;
	assert_int_equal(verify_capture(path, &out), 0);
	free(out);
	free(data);
	free(path);
}

/* ---- batches ---- */

/* A full batch refuses the next record and stays as it was; written, it
 * takes any record again, the biggest included. */
static void test_batch_full(void **state)
{
	char *path = new_path(), *out, err[256];
	struct audit_log *log = NULL;
	struct audit_batch *b = NULL;
	uint64_t first = 0;
	size_t big = 100000;
	char *controls = malloc(big + 1);
	memset(controls, 0x01, big);
	controls[big] = '\0';
	struct audit_record worst = req_deny;
	worst.path = worst.detail = worst.host = worst.listener = worst.client = controls;
	worst.method = worst.scheme = worst.credential = worst.reason = controls;

	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	assert_int_equal(audit_batch_new(&b), 0);
	assert_int_equal(audit_batch_add(NULL, &req_deny), -EINVAL);
	assert_int_equal(audit_batch_add(b, NULL), -EINVAL);
	assert_int_equal(audit_batch_write(NULL, b, &first), -EINVAL);
	/* Too many records. */
	int i = 0, r;
	while ((r = audit_batch_add(b, &req_deny)) >= 0)
		assert_int_equal(r, i++);
	assert_int_equal(r, -ENOBUFS);
	assert_true(i >= 64);
	assert_int_equal(audit_batch_count(b), (size_t)i);
	assert_int_equal(audit_batch_write(log, b, &first), 0);
	assert_int_equal(first, 0);
	/* Too many bytes: the refused record leaves nothing behind. */
	int n = 0;
	while ((r = audit_batch_add(b, &worst)) >= 0)
		n++;
	assert_int_equal(r, -ENOBUFS);
	assert_true(n >= 1);
	assert_int_equal(audit_batch_add(b, &req_allow), n);
	assert_int_equal(audit_batch_write(log, b, &first), 0);
	assert_int_equal(first, (uint64_t)i);
	/* An empty batch writes nothing. */
	assert_int_equal(audit_batch_write(log, b, &first), 0);
	audit_batch_free(b);
	audit_batch_free(NULL);
	audit_close(log);

	assert_int_equal(verify_capture(path, &out), 0);
	char want[128];
	snprintf(want, sizeof(want), "%d records, chain intact; last seq %d,", i + n + 1, i + n);
	if (!strstr(out, want))
		fail_msg("%s", out);
	free(out);
	free(controls);
	free(path);
}

/* Batches of several threads and single records interleave whole: every
 * batch's records come out consecutive, in the order they were added. */
static void *batch_thread(void *p)
{
	struct writer_arg *a = p;
	struct audit_batch *b = NULL;
	char detail[8][64];
	if (audit_batch_new(&b) < 0)
		return (void *)1;
	for (int i = 0; i < 100; i++) {
		for (int k = 0; k < 8; k++) {
			struct audit_record rec = req_deny;
			snprintf(detail[k], sizeof(detail[k]), "t%d b%d r%d", a->id, i, k);
			rec.detail = detail[k];
			if (audit_batch_add(b, &rec) != k)
				return (void *)2;
		}
		uint64_t first;
		if (audit_batch_write(a->log, b, &first) != 0)
			return (void *)3;
		if (audit_write(a->log, &ev_start) != 0)
			return (void *)4;
	}
	audit_batch_free(b);
	return NULL;
}

static void test_concurrent_batches(void **state)
{
	char *path = new_path();
	run_writers(path, batch_thread, "3600 records, chain intact; last seq 3599");

	size_t len;
	char *data = slurp(path, &len);
	char *line = data;
	int in_batch = 0, batch_t = -1, batch_b = -1;
	while (line < data + len) {
		char *nl = strchr(line, '\n');
		*nl = '\0';
		const char *d = strstr(line, "\"detail\":\"t");
		if (!d) {
			assert_int_equal(in_batch, 0);
		} else {
			int t, bi, k;
			assert_int_equal(sscanf(d + 11, "%d b%d r%d", &t, &bi, &k), 3);
			assert_int_equal(k, in_batch);
			if (k > 0) {
				assert_int_equal(t, batch_t);
				assert_int_equal(bi, batch_b);
			}
			batch_t = t;
			batch_b = bi;
			in_batch = (k + 1) % 8;
		}
		line = nl + 1;
	}
	free(data);
	free(path);
}

/* ---- show ---- */

static void test_show(void **state)
{
	char *path = new_path(), *out, err[256];
	struct audit_log *log = NULL;
	struct audit_record big = req_allow;
	big.port = 8443;
	assert_int_equal(audit_open(path, &log, err, sizeof(err)), 0);
	struct audit_record failed = res_ok;
	failed.request_seq = 4;
	failed.decision = "error";
	failed.reason = "upstream";
	failed.detail = "api.github.com reset the connection";
	failed.status = 502;
	failed.bytes_in = 5 * 1024 * 1024;
	failed.duration_us = 2500000;
	assert_int_equal(audit_write(log, &ev_start), 0);
	assert_int_equal(audit_write(log, &req_allow), 0);
	assert_int_equal(audit_write(log, &res_ok), 0);
	assert_int_equal(audit_write(log, &req_deny), 0);
	assert_int_equal(audit_write(log, &big), 0);
	assert_int_equal(audit_write(log, &failed), 0);
	audit_close(log);

	assert_int_equal(run_capture(audit_show, path, &out), 0);
	static const char *const expect[] = {
		"  #0      start  listener 127.0.0.1:8080\n",
		"  #1      allow  GET https://api.github.com/repos/acme/app  route 0  cred github\n",
		"  #2      result  for #1  allow  200  in 0 B out 1.2 KiB  3.1 ms\n",
		"  #3      deny   POST https://evil.example:8443/upload  403  reason host  "
		"\"no route allows host evil.example\"  in 0 B out 0 B  0 us\n",
		"  #4      allow  GET https://api.github.com:8443/repos/acme/app  route 0  cred github\n",
		"  #5      result  for #4  error  502  reason upstream  \"api.github.com reset the connection\"  "
		"in 5.0 MiB out 1.2 KiB  2.50 s\n",
		": 6 records, chain intact; last seq 5, last hash ",
	};
	for (size_t i = 0; i < ARRAY_SIZE(expect); i++)
		if (!strstr(out, expect[i]))
			fail_msg("show output lacks \"%s\":\n%s", expect[i], out);
	/* Dates as "YYYY-MM-DD HH:MM:SS". */
	assert_true(out[4] == '-' && out[10] == ' ' && out[13] == ':' && out[19] == ' ');
	assert_int_equal(count_char(out, strlen(out), '\n'), 7);
	free(out);

	/* A broken chain: the records before the break, then where it broke. */
	static const int order[] = { 0, 1, 3 };
	size_t len, starts[8];
	char *data = slurp(path, &len);
	split_lines(data, len, starts, ARRAY_SIZE(starts));
	FILE *f = fopen(path, "wb");
	for (size_t i = 0; i < ARRAY_SIZE(order); i++)
		fwrite(data + starts[order[i]], 1, starts[order[i] + 1] - starts[order[i]], f);
	fclose(f);
	assert_int_equal(run_capture(audit_show, path, &out), -EBADMSG);
	assert_non_null(strstr(out, "#0 "));
	assert_non_null(strstr(out, "#1 "));
	assert_null(strstr(out, "#3 "));
	char want[256];
	snprintf(want, sizeof(want), "%s:3: seq out of order", path);
	assert_non_null(strstr(out, want));
	free(out);
	free(data);

	snprintf(want, sizeof(want), "%s/nope.jsonl", tmpdir);
	assert_int_equal(run_capture(audit_show, want, &out), -ENOENT);
	free(out);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_refuses_non_regular),
		cmocka_unit_test(test_open_refuses_damaged_tail),
		cmocka_unit_test(test_open_refuses_second_writer),
		cmocka_unit_test(test_null_arguments),
		cmocka_unit_test(test_verify_missing_file),
		cmocka_unit_test(test_verify_flip_every_byte),
		cmocka_unit_test(test_verify_rearranged_lines),
		cmocka_unit_test(test_verify_deletion_with_renumbering),
		cmocka_unit_test(test_verify_truncated_last_line),
		cmocka_unit_test(test_verify_bad_lines),
		cmocka_unit_test(test_verify_line_too_long),
		cmocka_unit_test(test_verify_empty_file),
		cmocka_unit_test(test_record_format),
		cmocka_unit_test(test_write_reopen_continue),
		cmocka_unit_test(test_write_failure_leaves_file_intact),
		cmocka_unit_test(test_concurrent_writers),
		cmocka_unit_test(test_hostile_strings),
		cmocka_unit_test(test_long_strings_cut),
		cmocka_unit_test(test_cut_boundary),
		cmocka_unit_test(test_batch_full),
		cmocka_unit_test(test_concurrent_batches),
		cmocka_unit_test(test_show),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
