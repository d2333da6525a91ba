/* Reading an audit log back (src/audit/audit.h): audit_verify and
 * audit_show walk every line through a bounded reader and jansson, and
 * audit_open reads the last line backwards to continue the chain. All three
 * trust nothing in the file.
 *
 * A fuzzer cannot forge SHA-256, so on its own it would never get past the
 * first record of a chain. The harness therefore replaces every
 * "@@PREV@@" in the input with the hash the chain expects there (64 zeros
 * on the first line, else the SHA-256 of the previous line as rewritten),
 * which lets inputs reach the later records and the show path with
 * well-chained logs. Inputs without the marker are read as they are.
 *
 * Properties: verify's verdict is 0, -EBADMSG or a read error, never a
 * crash; show reaches the same verdict as verify (they share the walk);
 * audit_open accepts exactly when the last line is a complete record, and
 * never when verify saw an incomplete last line. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>

#include "audit/audit.h"
#include "common/buf.h"
#include "common/encode.h"
#include "fuzz.h"

#define MARK     "@@PREV@@"
#define MARK_LEN 8

static char tmp_path[256];
static FILE *devnull;

static void cleanup(void)
{
	if (tmp_path[0])
		unlink(tmp_path);
}

static void setup(void)
{
	if (tmp_path[0])
		return;
	/* tmpfs when there is one: audit_close fsyncs. */
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	snprintf(tmp_path, sizeof(tmp_path), "%s/kw-fuzz-audit-XXXXXX", dir ? dir : "/tmp");
	int fd = mkstemp(tmp_path);
	if (fd < 0)
		abort();
	close(fd);
	atexit(cleanup);
	devnull = fopen("/dev/null", "w");
	if (!devnull)
		abort();
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
		abort();
	hex_encode(md, 32, out);
}

/* The input with each marker replaced by the hash the chain expects. */
static void rewrite_chain(const char *in, size_t n, struct buf *out)
{
	char prev[65];
	memset(prev, '0', 64);
	prev[64] = '\0';
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(in + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - in) : n;
		size_t line_start = out->len;
		size_t j = i;
		while (j < end) {
			long k = mem_find(in + j, end - j, MARK, MARK_LEN);
			if (k < 0)
				break;
			if (buf_append(out, in + j, (size_t)k) < 0 || buf_append(out, prev, 64) < 0)
				abort();
			j += (size_t)k + MARK_LEN;
		}
		if (buf_append(out, in + j, end - j) < 0)
			abort();
		sha256_hex(out->data + line_start, out->len - line_start, prev);
		if (nl && buf_append(out, "\n", 1) < 0)
			abort();
		i = end + (nl ? 1 : 0);
	}
}

static void write_file(const char *p, size_t n)
{
	int fd = open(tmp_path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		abort();
	size_t done = 0;
	while (done < n) {
		ssize_t k = write(fd, p + done, n - done);
		if (k <= 0)
			abort();
		done += (size_t)k;
	}
	close(fd);
}

static void check_file(const char *p, size_t n)
{
	write_file(p, n);
	int v = audit_verify(tmp_path, devnull);
	fuzz_assert(v == 0 || v == -EBADMSG);
	int s = audit_show(tmp_path, devnull);
	fuzz_assert(s == v || (v == 0 && s < 0 && s != -EBADMSG) /* show may fail to print */);

	struct audit_log *log = NULL;
	char err[1024];
	int o = audit_open(tmp_path, &log, err, sizeof(err));
	fuzz_assert(o == 0 || o == -EBADMSG);
	if (o == 0) {
		/* The last line was a complete record. */
		fuzz_assert(n == 0 || p[n - 1] == '\n');
		audit_close(log);
	} else {
		fuzz_assert(n > 0 && err[0]);
	}
	/* A verified log can always be continued. */
	if (v == 0)
		fuzz_assert(o == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	if (size > (1u << 20))
		return 0;
	check_file((const char *)data, size);
	if (mem_find((const char *)data, size, MARK, MARK_LEN) >= 0) {
		struct buf b;
		buf_init(&b, 4u << 20);
		rewrite_chain((const char *)data, size, &b);
		check_file(b.data ? b.data : "", b.len);
		buf_free(&b);
	}
	return 0;
}
