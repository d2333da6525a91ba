/* The vault's files: reading, the master key, locking, atomic replacement.
 * The byte format and the crypto are in vault_format.c.
 *
 * Trusted: the state directory's owner (us). Verified: everything read from
 * the vault, the key file and the passphrase file (no symbolic links, mode
 * 0600 or stricter, bounded sizes, then vault_file_parse). */
#include "secrets/vault.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <sys/file.h>
#include <time.h>

#include "common/state.h"
#include "secrets/private_file.h"

/* Parameters of a new passphrase vault: scrypt's interactive setting
 * (RFC 7914 section 2 suggests N = 2^14 or more; 2^15 with r = 8 costs
 * 32 MiB and a fraction of a second). */
#define NEW_LOG2N 15
#define NEW_R     8
#define NEW_P     1

struct vault_paths {
	char dir[PATH_MAX];
	char file[PATH_MAX + 8];
	char key[PATH_MAX + 16];
	char lock[PATH_MAX + 16];
};

/* The folders vault_pin opened: -1 and the negative errno where one could
 * not be opened. Written once, before any reader thread starts. */
static struct {
	bool on;
	int state, state_err;
	int pass, pass_err; /* the passphrase file's folder; -1 and 0 without one */
} pinned = { .state = -1, .pass = -1 };

/* Where a reader opens path, one of the pinned files: its last name in the
 * pinned folder dirfd, else path itself (AT_FDCWD). */
struct at {
	int dirfd;
	const char *name;
};

static int at_pinned(int dirfd, int err, const char *path, struct at *ret)
{
	if (!pinned.on) {
		*ret = (struct at){ AT_FDCWD, path };
		return 0;
	}
	if (err < 0)
		return err;
	*ret = (struct at){ dirfd, private_file_name(path) };
	return 0;
}

static int vault_paths(struct vault_paths *p, char *errbuf, size_t errlen)
{
	/* A pinned reader makes nothing: the state directory is the folder
	 * it opened (and a path may lead elsewhere by now). */
	int r = state_dir(p->dir, sizeof(p->dir), !pinned.on, errbuf, errlen);
	if (r < 0)
		return r;
	snprintf(p->file, sizeof(p->file), "%s/vault", p->dir);
	snprintf(p->key, sizeof(p->key), "%s/vault.key", p->dir);
	snprintf(p->lock, sizeof(p->lock), "%s/vault.lock", p->dir);
	return 0;
}

int vault_path(char *out, size_t outlen, char *errbuf, size_t errlen)
{
	struct vault_paths p;
	int r = vault_paths(&p, errbuf, errlen);
	if (r == 0)
		snprintf(out, outlen, "%s", p.file);
	return r;
}

static const char *passphrase_file(void)
{
	const char *f = getenv(VAULT_PASSPHRASE_ENV);
	return f && *f ? f : NULL;
}

void vault_pin(void)
{
	char dir[PATH_MAX], e[512];
	if (pinned.on)
		return;
	/* Every failure is kept and told by the reads: no vault, or no
	 * passphrase, for as long as this process lives. */
	int r = state_dir(dir, sizeof(dir), false, e, sizeof(e));
	if (r == 0 && (pinned.state = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		r = -errno;
	pinned.state_err = r;
	const char *pf = passphrase_file();
	if (pf) {
		r = private_dir_open(pf, e, sizeof(e));
		if (r < 0)
			pinned.pass_err = r;
		else
			pinned.pass = r;
	}
	pinned.on = true;
}

int vault_stat(struct stat *ret)
{
	char path[PATH_MAX + 8], e[512];
	struct at a;
	int r = vault_path(path, sizeof(path), e, sizeof(e));
	if (r == 0)
		r = at_pinned(pinned.state, pinned.state_err, path, &a);
	if (r == 0 && fstatat(a.dirfd, a.name, ret, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	return r;
}

static int fsync_dir(const char *dir)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t k = write(fd, (const char *)p + done, n - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		done += (size_t)k;
	}
	return 0;
}

/* The whole vault file into *ret (malloc'd; ciphertext, not secret).
 * -ENOENT when there is no vault yet. */
static int read_vault(const char *path, uint8_t **ret, size_t *ret_n, char *errbuf, size_t errlen)
{
	struct stat st;
	struct at a;
	int r = at_pinned(pinned.state, pinned.state_err, path, &a);
	if (r < 0)
		return r; /* ENOENT: there was no state directory: no vault */
	_cleanup_close_ int fd = private_file_openat(a.dirfd, a.name, path, &st, errbuf, errlen);
	if (fd < 0)
		return fd;
	if (st.st_size > (off_t)VAULT_FILE_MAX) {
		snprintf(errbuf, errlen, "%s: larger than %u bytes", path, VAULT_FILE_MAX);
		return -EFBIG;
	}
	_cleanup_free_ uint8_t *data = malloc((size_t)st.st_size + 1);
	if (!data)
		return -ENOMEM;
	size_t n;
	r = fd_read_all(fd, data, (size_t)st.st_size + 1, &n);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (n != (size_t)st.st_size) {
		snprintf(errbuf, errlen, "%s: changed while being read", path);
		return -EAGAIN;
	}
	*ret = TAKE_PTR(data);
	*ret_n = n;
	return 0;
}

/* ---- the master key ---- */

static int read_key_file(const char *path, struct secret **ret, char *errbuf, size_t errlen)
{
	_cleanup_secret_ struct secret *k = NULL;
	char e[512];
	struct at a;
	int r = at_pinned(pinned.state, pinned.state_err, path, &a);
	if (r == 0)
		r = secret_file_readat(a.dirfd, a.name, path, VAULT_KEY_LEN, false, &k, e, sizeof(e));
	else
		snprintf(e, sizeof(e), "%s: %s", path, strerror(-r));
	if (r == -EFBIG || (r == 0 && k->len != VAULT_KEY_LEN)) {
		snprintf(errbuf, errlen, "%s: not a vault key (it must be exactly %d bytes)", path, VAULT_KEY_LEN);
		return -EINVAL;
	}
	if (r == -ENOENT) {
		snprintf(errbuf, errlen,
		         "%s is missing: the vault cannot be decrypted without it (restore it from a backup)", path);
		return r;
	}
	if (r < 0) {
		snprintf(errbuf, errlen, "%s", e);
		return r;
	}
	*ret = TAKE_PTR(k);
	return 0;
}

/* A new key file: 32 random bytes, created O_EXCL|O_NOFOLLOW with mode
 * 0600 (so it never replaces a key, nor follows a planted link). Called
 * under the writer lock. */
static int create_key_file(const struct vault_paths *p, struct secret **ret, char *errbuf, size_t errlen)
{
	_cleanup_secret_ struct secret *k = NULL;
	int r = secret_alloc(VAULT_KEY_LEN, &k);
	if (r < 0)
		return r;
	if (RAND_priv_bytes(k->data, VAULT_KEY_LEN) != 1) {
		snprintf(errbuf, errlen, "cannot get random bytes for a vault key");
		return -EIO;
	}
	int fd = open(p->key, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "%s: cannot create: %s", p->key, strerror(errno));
		return r;
	}
	r = write_all(fd, k->data, k->len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0)
		r = fsync_dir(p->dir);
	if (r < 0) {
		unlink(p->key);
		snprintf(errbuf, errlen, "%s: cannot write: %s", p->key, strerror(-r));
		return r;
	}
	*ret = TAKE_PTR(k);
	return 0;
}

static int scrypt_key(const struct secret *pass, const struct vault_header *h, struct secret **ret)
{
	_cleanup_secret_ struct secret *k = NULL;
	int r = secret_alloc(VAULT_KEY_LEN, &k);
	if (r < 0)
		return r;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	if (!ctx)
		return -ENOMEM;
	uint64_t n = (uint64_t)1 << h->log2_n, maxmem = (uint64_t)VAULT_SCRYPT_MAXMEM * 2;
	uint32_t rr = h->r, pp = h->p;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, pass->data, pass->len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)h->salt, VAULT_SALT_LEN),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &rr),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
		OSSL_PARAM_construct_end(),
	};
	int ok = EVP_KDF_derive(ctx, k->data, VAULT_KEY_LEN, params);
	EVP_KDF_CTX_free(ctx);
	if (ok != 1)
		return -EIO;
	*ret = TAKE_PTR(k);
	return 0;
}

static int passphrase_key(const char *pass_file, const struct vault_header *h, struct secret **ret, char *errbuf,
                          size_t errlen)
{
	_cleanup_secret_ struct secret *pass = NULL;
	char e[512];
	struct at a;
	int r = at_pinned(pinned.pass, pinned.pass_err, pass_file, &a);
	if (r == 0)
		r = secret_file_readat(a.dirfd, a.name, pass_file, VAULT_PASSPHRASE_MAX, true, &pass, e, sizeof(e));
	else
		snprintf(e, sizeof(e), "%s: its folder could not be opened when keyward started: %s", pass_file,
		         strerror(-r));
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: %s", VAULT_PASSPHRASE_ENV, e);
		return r;
	}
	if (pass->len == 0) {
		snprintf(errbuf, errlen, "%s: %s is empty", VAULT_PASSPHRASE_ENV, pass_file);
		return -EINVAL;
	}
	r = scrypt_key(pass, h, ret);
	if (r < 0)
		snprintf(errbuf, errlen, "scrypt failed (log2 N %u, r %u, p %u)", (unsigned)h->log2_n, h->r, h->p);
	return r;
}

static int existing_key_source(const struct vault_paths *p, const struct vault_header *h, struct secret **ret,
                               char *errbuf, size_t errlen)
{
	const char *pf = passphrase_file();
	if (h->kdf == VAULT_KDF_SCRYPT) {
		if (!pf) {
			snprintf(errbuf, errlen,
			         "%s is sealed with a passphrase: set %s to a file (mode 0600) that holds it", p->file,
			         VAULT_PASSPHRASE_ENV);
			return -ENOKEY;
		}
		return passphrase_key(pf, h, ret, errbuf, errlen);
	}
	if (pf) {
		/* Refused rather than ignored: the user believes a passphrase
		 * protects this vault, and it does not. */
		snprintf(errbuf, errlen, "%s is sealed with the key file %s, not a passphrase: unset %s", p->file,
		         p->key, VAULT_PASSPHRASE_ENV);
		return -EINVAL;
	}
	return read_key_file(p->key, ret, errbuf, errlen);
}

/* The master key of an existing vault, as its header says. A missing key
 * or passphrase file is -ENOKEY: -ENOENT means that there is no vault. */
static int existing_key(const struct vault_paths *p, const struct vault_header *h, struct secret **ret, char *errbuf,
                        size_t errlen)
{
	int r = existing_key_source(p, h, ret, errbuf, errlen);
	return r == -ENOENT ? -ENOKEY : r;
}

/* The header and master key of a vault about to be created: a passphrase
 * when $KEYWARD_PASSPHRASE_FILE is set, else vault.key (made if missing). */
static int new_key(const struct vault_paths *p, struct vault_header *h, struct secret **ret, char *errbuf,
                   size_t errlen)
{
	const char *pf = passphrase_file();
	int r;
	memset(h, 0, sizeof(*h));
	if (pf) {
		h->kdf = VAULT_KDF_SCRYPT;
		h->log2_n = NEW_LOG2N;
		h->r = NEW_R;
		h->p = NEW_P;
		if (RAND_bytes(h->salt, VAULT_SALT_LEN) != 1) {
			snprintf(errbuf, errlen, "cannot get random bytes for a salt");
			return -EIO;
		}
		r = passphrase_key(pf, h, ret, errbuf, errlen);
		return r == -ENOENT ? -ENOKEY : r;
	}
	h->kdf = VAULT_KDF_KEYFILE;
	if (access(p->key, F_OK) == 0 || errno != ENOENT)
		return read_key_file(p->key, ret, errbuf, errlen);
	return create_key_file(p, ret, errbuf, errlen);
}

/* ---- loading and saving ---- */

/* The verified vault and its working keys. With create, a missing vault
 * is a new empty one (and its key is made); without, -ENOENT. */
static int load(const struct vault_paths *p, bool create, struct vault_file **ret_v, struct secret **ret_keys,
                char *errbuf, size_t errlen)
{
	_cleanup_free_ uint8_t *data = NULL;
	_cleanup_secret_ struct secret *master = NULL, *keys = NULL;
	_cleanup_(vault_file_freep) struct vault_file *v = NULL;
	struct vault_header h;
	size_t n = 0;
	char e[512];

	int r = read_vault(p->file, &data, &n, errbuf, errlen);
	if (r == -ENOENT && create) {
		r = new_key(p, &h, &master, errbuf, errlen);
		if (r == 0)
			r = vault_keys_derive(master, &keys);
		if (r == 0)
			r = vault_file_new(&h, &v);
	} else if (r == 0) {
		r = vault_header_parse(data, n, &h, e, sizeof(e));
		if (r < 0) {
			snprintf(errbuf, errlen, "%s: %s", p->file, e);
			return r;
		}
		r = existing_key(p, &h, &master, errbuf, errlen);
		if (r == 0)
			r = vault_keys_derive(master, &keys);
		if (r == 0) {
			r = vault_file_parse(data, n, keys, &v, e, sizeof(e));
			if (r < 0)
				snprintf(errbuf, errlen, "%s: %s", p->file, e);
		}
	}
	if (r < 0)
		return r;
	*ret_v = TAKE_PTR(v);
	*ret_keys = TAKE_PTR(keys);
	return 0;
}

/* Replaces the vault with v: a temporary file in the same directory
 * (mkostemp: O_EXCL, 0600), fsync, rename over the vault, fsync of the
 * directory. A crash at any point leaves the old vault or the new one. */
static int save(const struct vault_paths *p, const struct vault_file *v, const struct secret *keys, char *errbuf,
                size_t errlen)
{
	struct buf out;
	buf_init(&out, VAULT_FILE_MAX);
	int r = vault_file_serialize(v, keys, &out);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: %s", p->file,
		         r == -ENOBUFS ? "the vault would be larger than its limit of 16 MiB" : strerror(-r));
		buf_free(&out);
		return r;
	}
	char tmp[sizeof(p->file) + 16];
	snprintf(tmp, sizeof(tmp), "%s/.vault.XXXXXX", p->dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "%s: cannot create a temporary file: %s", p->dir, strerror(errno));
		buf_free(&out);
		return r;
	}
	r = write_all(fd, out.data, out.len);
	buf_free(&out);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, p->file) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		snprintf(errbuf, errlen, "%s: cannot write: %s", p->file, strerror(-r));
		return r;
	}
	r = fsync_dir(p->dir);
	if (r < 0)
		snprintf(errbuf, errlen, "%s: cannot sync: %s", p->dir, strerror(-r));
	return r;
}

/* Serialises writers: read-modify-write happens under this lock, so two
 * concurrent sets both land. Released when the descriptor is closed. */
static int lock_writers(const struct vault_paths *p, char *errbuf, size_t errlen)
{
	int fd = open(p->lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int r = -errno;
		snprintf(errbuf, errlen, "%s: %s", p->lock, strerror(errno));
		return r;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		int r = -errno;
		snprintf(errbuf, errlen, "%s: cannot lock: %s", p->lock, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

/* ---- the API ---- */

/* An open vault: its paths, the verified contents and working keys, and
 * for writers the lock. */
struct vault_session {
	struct vault_paths p;
	struct vault_file *v;
	struct secret *keys;
	int lock;
};

static void session_end(struct vault_session *s)
{
	vault_file_free(s->v);
	secret_free(s->keys);
	if (s->lock >= 0)
		close(s->lock);
}

enum { OPEN_READ, OPEN_WRITE, OPEN_CREATE };

/* Finds the files, takes the writer lock (OPEN_WRITE, OPEN_CREATE) and
 * loads the vault (OPEN_CREATE: a missing one is made). -ENOENT: no vault. */
static int session_start(struct vault_session *s, int mode, char *errbuf, size_t errlen)
{
	s->lock = -1;
	int r = vault_paths(&s->p, errbuf, errlen);
	if (r < 0)
		return r;
	if (mode != OPEN_READ) {
		s->lock = lock_writers(&s->p, errbuf, errlen);
		if (s->lock < 0)
			return s->lock;
	}
	return load(&s->p, mode == OPEN_CREATE, &s->v, &s->keys, errbuf, errlen);
}

#define _cleanup_session_ _cleanup_(session_end)

int vault_get(const char *name, struct secret **ret, char *errbuf, size_t errlen)
{
	_cleanup_session_ struct vault_session s = { 0 };
	char e[512];

	int r = session_start(&s, OPEN_READ, errbuf, errlen);
	if (r == -ENOENT)
		snprintf(errbuf, errlen,
		         "no secret \"%s\": there is no vault at %s yet (add it with: keyward secret set %s)", name,
		         s.p.file, name);
	if (r < 0)
		return r;
	int i = vault_file_find(s.v, name);
	if (i < 0) {
		snprintf(errbuf, errlen, "no secret \"%s\" in %s (add it with: keyward secret set %s)", name, s.p.file,
		         name);
		return -ENOENT;
	}
	r = vault_entry_open(s.v, (size_t)i, s.keys, ret, e, sizeof(e));
	if (r < 0)
		snprintf(errbuf, errlen, "%s: %s", s.p.file, e);
	return r;
}

int vault_set(const char *name, const struct secret *value, char *errbuf, size_t errlen)
{
	_cleanup_session_ struct vault_session s = { 0 };
	char why[128];

	if (!vault_name_valid(name)) {
		snprintf(errbuf, errlen, "invalid secret name (1 to %d characters of A-Z a-z 0-9 _ . -)",
		         VAULT_NAME_MAX);
		return -EINVAL;
	}
	int r = secret_value_check(value->data, value->len, why, sizeof(why));
	if (r < 0) {
		snprintf(errbuf, errlen, "the value of %s %s", name, why);
		return r;
	}
	r = session_start(&s, OPEN_CREATE, errbuf, errlen);
	if (r < 0)
		return r;
	r = vault_file_put(s.v, name, value, (uint64_t)time(NULL), s.keys);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: cannot add %s: %s", s.p.file, name,
		         r == -ENOSPC ? "the vault is full" : strerror(-r));
		return r;
	}
	return save(&s.p, s.v, s.keys, errbuf, errlen);
}

int vault_remove(const char *name, char *errbuf, size_t errlen)
{
	_cleanup_session_ struct vault_session s = { 0 };

	int r = session_start(&s, OPEN_WRITE, errbuf, errlen);
	if (r == 0)
		r = vault_file_remove(s.v, name);
	if (r == -ENOENT)
		snprintf(errbuf, errlen, "no secret \"%s\" in %s", name, s.p.file);
	if (r < 0)
		return r;
	return save(&s.p, s.v, s.keys, errbuf, errlen);
}

int vault_list(struct vault_info **ret, size_t *ret_n, char *errbuf, size_t errlen)
{
	_cleanup_session_ struct vault_session s = { 0 };

	int r = session_start(&s, OPEN_READ, errbuf, errlen);
	if (r == -ENOENT) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (r < 0)
		return r;
	struct vault_info *info = calloc(s.v->n ? s.v->n : 1, sizeof(*info));
	if (!info)
		return -ENOMEM;
	for (size_t i = 0; i < s.v->n; i++) {
		memcpy(info[i].name, s.v->entries[i].name, sizeof(info[i].name));
		info[i].created = s.v->entries[i].created;
		info[i].rotated = s.v->entries[i].rotated;
	}
	*ret = info;
	*ret_n = s.v->n;
	return 0;
}
