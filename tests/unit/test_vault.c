/* The vault (src/secrets/vault.h, vault_format.h), each test in a fresh
 * $KEYWARD_HOME. Refusals first: bad names and values, loose permissions,
 * symbolic links, a wrong key, then every single-bit flip and every
 * truncation of a three-entry vault, removed and reordered entries, all of
 * which must fail with a message naming the part concerned. Then what
 * works: round trip, rotation, removal, eight concurrent writers, and the
 * passphrase mode. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/secret.h"
#include "secrets/vault.h"

struct home {
	char dir[256];
	char vault[300];
	char key[300];
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct home *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	const char *tmp = getenv("TMPDIR");
	snprintf(h->dir, sizeof(h->dir), "%s/kw-vault-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(h->dir));
	snprintf(h->vault, sizeof(h->vault), "%s/vault", h->dir);
	snprintf(h->key, sizeof(h->key), "%s/vault.key", h->dir);
	setenv("KEYWARD_HOME", h->dir, 1);
	unsetenv(VAULT_PASSPHRASE_ENV);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct home *h = *state;
	chmod(h->dir, 0700);
	nftw(h->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	unsetenv(VAULT_PASSPHRASE_ENV);
	free(h);
	return 0;
}

static void set_ok(const char *name, const char *value)
{
	struct secret *s;
	char err[1024] = "";
	assert_int_equal(secret_new(value, strlen(value), &s), 0);
	int r = vault_set(name, s, err, sizeof(err));
	secret_free(s);
	if (r < 0)
		fail_msg("vault_set %s: %s", name, err);
}

static void get_is(const char *name, const char *value)
{
	struct secret *s = NULL;
	char err[1024] = "";
	int r = vault_get(name, &s, err, sizeof(err));
	if (r < 0)
		fail_msg("vault_get %s: %s", name, err);
	assert_int_equal(s->len, strlen(value));
	assert_memory_equal(s->data, value, s->len);
	secret_free(s);
}

/* vault_get and vault_list both fail, and the message contains want. */
static void both_fail(const char *name, const char *want)
{
	struct secret *s = NULL;
	struct vault_info *info = NULL;
	size_t n = 99;
	char err[1024] = "";

	assert_true(vault_get(name, &s, err, sizeof(err)) < 0);
	assert_null(s);
	if (!strstr(err, want))
		fail_msg("vault_get: \"%s\" does not name \"%s\"", err, want);
	err[0] = '\0';
	assert_true(vault_list(&info, &n, err, sizeof(err)) < 0);
	assert_null(info);
	if (!strstr(err, want))
		fail_msg("vault_list: \"%s\" does not name \"%s\"", err, want);
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, cap);
	close(fd);
	assert_true(n >= 0 && (size_t)n < cap);
	return (size_t)n;
}

static void write_file(const char *path, const void *buf, size_t n, mode_t mode)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* ---- names and values ---- */

static void test_names_and_values(void **state)
{
	struct home *h = *state;
	static const char *const bad_names[] = { "", "a/b", "../x", "a b", "é", "a\n", "x:y", NULL };
	static const struct {
		const char *v;
		size_t n;
		int r;
	} bad_values[] = {
		{ "", 0, -ENODATA },     { "a\rb", 3, -EINVAL }, { "a\nb", 3, -EINVAL },
		{ "a\0b", 3, -EINVAL },  { "\x01", 1, -EINVAL }, { "a\x1f", 2, -EINVAL },
		{ "a\x7f", 2, -EINVAL }, { "ab\n", 3, -EINVAL }, { "\tab", 3, -EINVAL },
	};
	char err[1024], why[128];
	struct secret *s;

	for (size_t i = 0; bad_names[i]; i++) {
		assert_false(vault_name_valid(bad_names[i]));
		assert_int_equal(secret_new("v", 1, &s), 0);
		assert_int_equal(vault_set(bad_names[i], s, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "invalid secret name"));
		secret_free(s);
	}
	char long_name[130];
	memset(long_name, 'n', 129);
	long_name[129] = '\0';
	assert_false(vault_name_valid(long_name));
	long_name[128] = '\0';
	assert_true(vault_name_valid(long_name));
	assert_true(vault_name_valid("a"));
	assert_true(vault_name_valid("Npm.registry_1-x"));

	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		assert_int_equal(secret_value_check(bad_values[i].v, bad_values[i].n, why, sizeof(why)),
		                 bad_values[i].r);
		assert_int_equal(secret_new(bad_values[i].v, bad_values[i].n, &s), 0);
		assert_int_equal(vault_set("x", s, err, sizeof(err)), bad_values[i].r);
		assert_non_null(strstr(err, "the value of x "));
		secret_free(s);
	}
	/* 64 KiB is the ceiling, one more byte is refused */
	char *big = malloc(SECRET_MAX + 1);
	assert_non_null(big);
	memset(big, 'b', SECRET_MAX + 1);
	assert_int_equal(secret_value_check(big, SECRET_MAX + 1, why, sizeof(why)), -EFBIG);
	assert_int_equal(secret_value_check(big, SECRET_MAX, why, sizeof(why)), 0);
	assert_int_equal(secret_new(big, SECRET_MAX + 1, &s), 0);
	assert_int_equal(vault_set("x", s, err, sizeof(err)), -EFBIG);
	secret_free(s);
	/* nothing was written by any refusal */
	assert_int_equal(access(h->vault, F_OK), -1);
	assert_int_equal(secret_new(big, SECRET_MAX, &s), 0);
	assert_int_equal(vault_set("big", s, err, sizeof(err)), 0);
	secret_free(s);
	struct secret *got;
	assert_int_equal(vault_get("big", &got, err, sizeof(err)), 0);
	assert_int_equal(got->len, SECRET_MAX);
	assert_memory_equal(got->data, big, SECRET_MAX);
	secret_free(got);
	free(big);
}

/* ---- files others can read, links ---- */

static void test_permissions(void **state)
{
	struct home *h = *state;
	char fix[400];
	set_ok("a", "value-a");

	assert_int_equal(chmod(h->vault, 0644), 0);
	snprintf(fix, sizeof(fix), "fix with: chmod 600 %s", h->vault);
	both_fail("a", fix);
	assert_int_equal(chmod(h->vault, 0600), 0);

	assert_int_equal(chmod(h->key, 0644), 0);
	snprintf(fix, sizeof(fix), "fix with: chmod 600 %s", h->key);
	both_fail("a", fix);
	assert_int_equal(chmod(h->key, 0600), 0);

	assert_int_equal(chmod(h->dir, 0755), 0);
	snprintf(fix, sizeof(fix), "fix with: chmod 700 %s", h->dir);
	both_fail("a", fix);
	assert_int_equal(chmod(h->dir, 0700), 0);

	get_is("a", "value-a");
	/* both files are created 0600 */
	struct stat st;
	assert_int_equal(stat(h->vault, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(h->key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_symlinks(void **state)
{
	struct home *h = *state;
	char real[400];
	set_ok("a", "value-a");

	snprintf(real, sizeof(real), "%s/real-vault", h->dir);
	assert_int_equal(rename(h->vault, real), 0);
	assert_int_equal(symlink(real, h->vault), 0);
	both_fail("a", "symbolic link");
	struct secret *s;
	char err[1024];
	assert_int_equal(secret_new("v", 1, &s), 0);
	assert_int_equal(vault_set("b", s, err, sizeof(err)), -ELOOP);
	secret_free(s);
	unlink(h->vault);
	assert_int_equal(rename(real, h->vault), 0);

	snprintf(real, sizeof(real), "%s/real-key", h->dir);
	assert_int_equal(rename(h->key, real), 0);
	assert_int_equal(symlink(real, h->key), 0);
	both_fail("a", "symbolic link");
}

/* ---- keys ---- */

static void test_wrong_key(void **state)
{
	struct home *h = *state;
	set_ok("a", "value-a");
	set_ok("b", "value-b");

	uint8_t key[64] = { 0 }; /* bytes 32.. are written below: defined */
	assert_int_equal(read_file(h->key, key, sizeof(key)), 32);
	key[5] ^= 1;
	write_file(h->key, key, 32, 0600);
	both_fail("b", "vault: entry 1 \"a\": cannot decrypt: wrong key or corrupted");

	write_file(h->key, key, 31, 0600);
	both_fail("b", "not a vault key (it must be exactly 32 bytes)");
	write_file(h->key, key, 33, 0600);
	both_fail("b", "not a vault key (it must be exactly 32 bytes)");
	write_file(h->key, key, 0, 0600);
	both_fail("b", "not a vault key (it must be exactly 32 bytes)");

	unlink(h->key);
	both_fail("b", "vault.key is missing");
	/* a set must not make a new key for an existing vault */
	struct secret *s;
	char err[1024];
	assert_int_equal(secret_new("v", 1, &s), 0);
	assert_int_equal(vault_set("c", s, err, sizeof(err)), -ENOKEY);
	secret_free(s);
	assert_int_equal(access(h->key, F_OK), -1);

	/* a key-file vault refuses a passphrase rather than ignore it */
	key[5] ^= 1;
	write_file(h->key, key, 32, 0600);
	get_is("b", "value-b");
	setenv(VAULT_PASSPHRASE_ENV, "/nonexistent", 1);
	both_fail("b", "not a passphrase: unset KEYWARD_PASSPHRASE_FILE");
}

/* ---- damage: flips, truncations, removals, reordering ---- */

#define V1 "first-value-0001"
#define V2 "second-value-02"
#define V3 "third-value-000003"

/* A vault with entries "a", "b", "c"; its bytes in buf, and where each part
 * starts: ends[0] is the header's end, ends[i] the end of entry i, ends[4]
 * the end of the trailer (the file's size). */
static size_t sample(struct home *h, uint8_t *buf, size_t cap, size_t ends[5])
{
	set_ok("b", V2);
	set_ok("c", V3);
	set_ok("a", V1);
	size_t n = read_file(h->vault, buf, cap);
	static const size_t vlen[3] = { sizeof(V1) - 1, sizeof(V2) - 1, sizeof(V3) - 1 };
	ends[0] = VAULT_HEADER_LEN;
	for (int i = 0; i < 3; i++)
		ends[i + 1] = ends[i] + 1 + 1 + 8 + 8 + VAULT_NONCE_LEN + 4 + vlen[i] + VAULT_TAG_LEN + VAULT_MAC_LEN;
	ends[4] = ends[3] + VAULT_MAC_LEN;
	assert_int_equal(n, ends[4]);
	return n;
}

/* What a failure at byte offset off must name: the header, the entry that
 * holds the byte (by position: a damaged name is shown as read), a missing
 * entry when a truncation ends exactly between two, or the trailer. */
static void part_at(size_t off, const size_t ends[5], bool truncated, char *out, size_t outlen)
{
	if (off < ends[0]) {
		snprintf(out, outlen, "vault: header: ");
		return;
	}
	if (off >= ends[3]) {
		snprintf(out, outlen, "vault: trailer: ");
		return;
	}
	int i = 0;
	while (off >= ends[i + 1])
		i++;
	if (truncated && off == ends[i])
		snprintf(out, outlen, "vault: entry %d of 3 is missing", i + 1);
	else
		snprintf(out, outlen, "vault: entry %d", i + 1);
}

static void test_every_flip(void **state)
{
	struct home *h = *state;
	uint8_t orig[2048], buf[2048];
	size_t ends[5];
	size_t n = sample(h, orig, sizeof(orig), ends);
	char want[64];

	for (size_t off = 0; off < n; off++) {
		memcpy(buf, orig, n);
		buf[off] ^= (uint8_t)(1u << (off % 8));
		write_file(h->vault, buf, n, 0600);
		part_at(off, ends, false, want, sizeof(want));
		both_fail("b", want);
	}
	/* and the value itself, whole or in part, is nowhere in the file */
	assert_null(memmem(orig, n, V1, 6));
	assert_null(memmem(orig, n, V2, 6));
	assert_null(memmem(orig, n, V3, 6));
	write_file(h->vault, orig, n, 0600);
	get_is("b", V2);
}

static void test_every_truncation(void **state)
{
	struct home *h = *state;
	uint8_t orig[2048];
	size_t ends[5];
	size_t n = sample(h, orig, sizeof(orig), ends);
	char want[64];

	for (size_t len = 0; len < n; len++) {
		write_file(h->vault, orig, len, 0600);
		part_at(len, ends, true, want, sizeof(want));
		both_fail("a", want);
	}
	/* a byte too many */
	uint8_t longer[2048];
	memcpy(longer, orig, n);
	longer[n] = 0;
	write_file(h->vault, longer, n + 1, 0600);
	both_fail("a", "vault: trailer: 1 unexpected bytes after it");
}

/* Rewrites the entry count in a header and its checksum, as an attacker
 * who removes an entry would, so that only the keyed MACs can tell. */
static void set_count(uint8_t *buf, uint32_t count)
{
	buf[36] = (uint8_t)(count >> 24);
	buf[37] = (uint8_t)(count >> 16);
	buf[38] = (uint8_t)(count >> 8);
	buf[39] = (uint8_t)count;
	unsigned int len = 0;
	assert_int_equal(EVP_Digest(buf, VAULT_HEADER_LEN - 32, buf + VAULT_HEADER_LEN - 32, &len, EVP_sha256(), NULL),
	                 1);
}

static void test_removed_and_reordered(void **state)
{
	struct home *h = *state;
	uint8_t orig[2048], buf[2048];
	size_t ends[5];
	size_t n = sample(h, orig, sizeof(orig), ends), m;

	/* entry "b" cut out, count left at 3: "c" no longer chains to "a" */
	m = 0;
	memcpy(buf, orig, ends[1]);
	m = ends[1];
	memcpy(buf + m, orig + ends[2], n - ends[2]);
	m += n - ends[2];
	write_file(h->vault, buf, m, 0600);
	both_fail("a", "vault: entry 2 \"c\": cannot decrypt: wrong key or corrupted (or an entry before it was "
	               "removed or reordered)");

	/* the same with the count (and the header's checksum) made to match */
	set_count(buf, 2);
	write_file(h->vault, buf, m, 0600);
	both_fail("a", "vault: entry 1 \"a\": cannot decrypt: wrong key or corrupted");

	/* the last entry and the trailer cut off, count made to match */
	memcpy(buf, orig, ends[2]);
	set_count(buf, 2);
	memcpy(buf + ends[2], orig + ends[3], VAULT_MAC_LEN);
	write_file(h->vault, buf, ends[2] + VAULT_MAC_LEN, 0600);
	both_fail("a", "vault: entry 1 \"a\": cannot decrypt");

	/* every entry removed: a well-formed empty vault, but not ours */
	memcpy(buf, orig, VAULT_HEADER_LEN);
	set_count(buf, 0);
	memcpy(buf + VAULT_HEADER_LEN, orig + ends[3], VAULT_MAC_LEN);
	write_file(h->vault, buf, VAULT_HEADER_LEN + VAULT_MAC_LEN, 0600);
	both_fail("a", "vault: trailer: cannot decrypt: wrong key or corrupted");

	/* "a" and "b" swapped */
	memcpy(buf, orig, ends[0]);
	m = ends[0];
	memcpy(buf + m, orig + ends[1], ends[2] - ends[1]);
	m += ends[2] - ends[1];
	memcpy(buf + m, orig + ends[0], ends[1] - ends[0]);
	m += ends[1] - ends[0];
	memcpy(buf + m, orig + ends[2], n - ends[2]);
	write_file(h->vault, buf, n, 0600);
	both_fail("a", "vault: entry 1 \"b\": cannot decrypt");

	/* an entry duplicated over another */
	memcpy(buf, orig, n);
	memcpy(buf + ends[2], orig + ends[1], ends[2] - ends[1]);
	write_file(h->vault, buf, n - (ends[3] - ends[2]) + (ends[2] - ends[1]), 0600);
	both_fail("a", "vault: entry 3 \"b\": cannot decrypt");

	write_file(h->vault, orig, n, 0600);
	get_is("a", V1);
}

/* ---- what works ---- */

static void test_round_trip(void **state)
{
	struct home *h = *state;
	struct vault_info *info;
	size_t n;
	char err[1024];
	struct secret *s = NULL;

	/* no vault yet: empty list, and get says how to add one */
	assert_int_equal(vault_list(&info, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(info);
	assert_int_equal(vault_get("gh", &s, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "keyward secret set gh"));
	assert_int_equal(vault_remove("gh", err, sizeof(err)), -ENOENT);

	set_ok("gh", "token-1");
	set_ok("aws", "AKIA-1");
	set_ok("npm", "npm-token");
	get_is("gh", "token-1");
	get_is("aws", "AKIA-1");
	get_is("npm", "npm-token");
	assert_int_equal(vault_get("nope", &s, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no secret \"nope\""));

	assert_int_equal(vault_list(&info, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(info[0].name, "aws");
	assert_string_equal(info[1].name, "gh");
	assert_string_equal(info[2].name, "npm");
	assert_true(info[1].created > 0);
	assert_int_equal(info[1].rotated, 0);
	uint64_t created = info[1].created;
	free(info);

	/* rotation: new value, creation time kept, rotation time set */
	set_ok("gh", "token-2");
	get_is("gh", "token-2");
	assert_int_equal(vault_list(&info, &n, err, sizeof(err)), 0);
	assert_int_equal(info[1].created, created);
	assert_true(info[1].rotated >= created);
	free(info);

	assert_int_equal(vault_remove("aws", err, sizeof(err)), 0);
	assert_int_equal(vault_remove("aws", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "no secret \"aws\""));
	assert_int_equal(vault_get("aws", &s, err, sizeof(err)), -ENOENT);
	get_is("gh", "token-2");
	get_is("npm", "npm-token");

	/* removing the last one leaves a valid empty vault */
	assert_int_equal(vault_remove("gh", err, sizeof(err)), 0);
	assert_int_equal(vault_remove("npm", err, sizeof(err)), 0);
	assert_int_equal(vault_list(&info, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(info);
	assert_int_equal(access(h->vault, F_OK), 0);

	/* the header as docs/vault.md describes it */
	uint8_t buf[256];
	size_t len = read_file(h->vault, buf, sizeof(buf));
	assert_int_equal(len, VAULT_HEADER_LEN + VAULT_MAC_LEN);
	assert_memory_equal(buf, "KWVAULT\0\0\1\0\0", 12);
	/* no temporary file left behind */
	DIR *d = opendir(h->dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, ".vault.", 7) == 0)
			fail_msg("temporary file %s left behind", e->d_name);
	closedir(d);
}

static void writer(const char *name)
{
	struct secret *s;
	char err[1024];
	if (secret_new(name, strlen(name), &s) < 0 || vault_set(name, s, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", name, err);
		_exit(1);
	}
	secret_free(s);
	_exit(0);
}

static void test_concurrent_writers(void **state)
{
	(void)state;
	enum { N = 8 };
	pid_t pids[N];
	char name[N][16];

	fflush(NULL);
	for (int i = 0; i < N; i++) {
		snprintf(name[i], sizeof(name[i]), "writer-%d", i);
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
			writer(name[i]);
	}
	for (int i = 0; i < N; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	struct vault_info *info;
	size_t n;
	char err[1024];
	assert_int_equal(vault_list(&info, &n, err, sizeof(err)), 0);
	assert_int_equal(n, N);
	free(info);
	for (int i = 0; i < N; i++)
		get_is(name[i], name[i]);
}

static void test_passphrase(void **state)
{
	struct home *h = *state;
	char pf[400], err[1024];
	snprintf(pf, sizeof(pf), "%s/passphrase", h->dir);
	write_file(pf, "correct horse battery staple\n", 29, 0600);
	setenv(VAULT_PASSPHRASE_ENV, pf, 1);

	set_ok("a", "value-a");
	set_ok("b", "value-b");
	get_is("a", "value-a");
	get_is("b", "value-b");
	/* no key file: the passphrase is the only key */
	assert_int_equal(access(h->key, F_OK), -1);
	uint8_t buf[1024];
	assert_true(read_file(h->vault, buf, sizeof(buf)) > VAULT_HEADER_LEN);
	assert_int_equal(buf[10], VAULT_KDF_SCRYPT);
	assert_int_equal(buf[11], 15);

	/* one trailing newline is not part of the passphrase */
	write_file(pf, "correct horse battery staple", 28, 0600);
	get_is("a", "value-a");

	write_file(pf, "correct horse battery stapler\n", 30, 0600);
	both_fail("a", "vault: entry 1 \"a\": cannot decrypt: wrong key or corrupted");

	write_file(pf, "correct horse battery staple\n", 29, 0644);
	char fix[450];
	snprintf(fix, sizeof(fix), "fix with: chmod 600 %s", pf);
	both_fail("a", fix);

	write_file(pf, "\n", 1, 0600);
	both_fail("a", "is empty");

	unsetenv(VAULT_PASSPHRASE_ENV);
	both_fail("a", "is sealed with a passphrase: set KEYWARD_PASSPHRASE_FILE");
	struct secret *s;
	assert_int_equal(secret_new("v", 1, &s), 0);
	assert_int_equal(vault_set("c", s, err, sizeof(err)), -ENOKEY);
	secret_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_names_and_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_flip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_and_reordered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passphrase, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
