#include "secrets/vault_format.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>

static const uint8_t magic[8] = { 'K', 'W', 'V', 'A', 'U', 'L', 'T', 0 };
static const char trailer_label[] = "keyward vault v1 end";

/* The derived keys, in one secret: AES-256-GCM key, then HMAC key. */
#define KEYS_ENC(k) ((k)->data)
#define KEYS_MAC(k) ((k)->data + 32)

bool vault_name_valid(const char *name)
{
	return name_valid(name, 1, VAULT_NAME_MAX);
}

/* ---- a bounded cursor over untrusted bytes ---- */

struct cursor {
	const uint8_t *p;
	size_t len, off;
};

static size_t cur_left(const struct cursor *c)
{
	return c->len - c->off;
}

static bool cur_bytes(struct cursor *c, size_t n, const uint8_t **ret)
{
	if (cur_left(c) < n)
		return false;
	*ret = c->p + c->off;
	c->off += n;
	return true;
}

static bool cur_copy(struct cursor *c, void *out, size_t n)
{
	const uint8_t *p;
	if (!cur_bytes(c, n, &p))
		return false;
	memcpy(out, p, n);
	return true;
}

static bool cur_be(struct cursor *c, size_t width, uint64_t *ret)
{
	const uint8_t *p;
	if (!cur_bytes(c, width, &p))
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < width; i++)
		v = (v << 8) | p[i];
	*ret = v;
	return true;
}

/* Appends fields to a buffer and keeps the first failure, so that a run of
 * fields reads as the layout in docs/vault.md, without a check after each. */
struct writer {
	struct buf *b;
	int r;
};

static void put_bytes(struct writer *w, const void *p, size_t n)
{
	if (w->r == 0)
		w->r = buf_append(w->b, p, n);
}

static void put_be(struct writer *w, uint64_t v, size_t width)
{
	uint8_t tmp[8];
	for (size_t i = 0; i < width; i++)
		tmp[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
	put_bytes(w, tmp, width);
}

/* ---- crypto ---- */

static int hkdf(const struct secret *master, const char *info, unsigned char *out, size_t outlen)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	if (!ctx)
		return -ENOMEM;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, master->data, master->len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (char *)info, strlen(info)),
		OSSL_PARAM_construct_end(),
	};
	int ok = EVP_KDF_derive(ctx, out, outlen, params);
	EVP_KDF_CTX_free(ctx);
	return ok == 1 ? 0 : -EIO;
}

int vault_keys_derive(const struct secret *master, struct secret **ret)
{
	_cleanup_secret_ struct secret *k = NULL;
	if (master->len != VAULT_KEY_LEN)
		return -EINVAL;
	int r = secret_alloc(64, &k);
	if (r < 0)
		return r;
	/* Separate keys for separate jobs (RFC 5869 3.3: info binds each
	 * output to its use). */
	r = hkdf(master, "keyward vault v1 aes-256-gcm", KEYS_ENC(k), 32);
	if (r == 0)
		r = hkdf(master, "keyward vault v1 hmac-sha256", KEYS_MAC(k), 32);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(k);
	return 0;
}

/* HMAC-SHA256 over a then b. */
static int hmac2(const struct secret *keys, const void *a, size_t an, const void *b, size_t bn,
                 uint8_t out[VAULT_MAC_LEN])
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	EVP_MAC_free(mac);
	if (!ctx)
		return -ENOMEM;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	size_t len = 0;
	int ok = EVP_MAC_init(ctx, KEYS_MAC(keys), 32, params) == 1 && EVP_MAC_update(ctx, a, an) == 1 &&
	         EVP_MAC_update(ctx, b, bn) == 1 && EVP_MAC_final(ctx, out, &len, VAULT_MAC_LEN) == 1 &&
	         len == VAULT_MAC_LEN;
	EVP_MAC_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

static int sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned int len = 0;
	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -EIO;
}

/* The associated data of an entry's AEAD: format version, name, times.
 * Binding the name stops a value being moved to another name; binding the
 * times means they cannot be altered even if the HMAC layer were gone. */
static int entry_ad(const struct vault_entry *e, struct buf *ad)
{
	struct writer w = { ad, 0 };
	size_t nl = strlen(e->name);
	put_be(&w, VAULT_VERSION, 2);
	put_be(&w, nl, 1);
	put_bytes(&w, e->name, nl);
	put_be(&w, e->created, 8);
	put_be(&w, e->rotated, 8);
	return w.r;
}

static int seal(struct vault_entry *e, const struct secret *value, const struct secret *keys)
{
	struct buf ad;
	buf_init(&ad, 2 + 1 + VAULT_NAME_MAX + 16);
	uint8_t *ct = malloc(value->len ? value->len : 1);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int r = -ENOMEM;
	int n1 = 0, n2 = 0;

	if (!ct || !ctx || entry_ad(e, &ad) < 0)
		goto out;
	r = -EIO;
	if (RAND_bytes(e->nonce, VAULT_NONCE_LEN) != 1)
		goto out;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, VAULT_NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, KEYS_ENC(keys), e->nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n1, (const uint8_t *)ad.data, (int)ad.len) != 1 ||
	    EVP_EncryptUpdate(ctx, ct, &n1, value->data, (int)value->len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, ct + n1, &n2) != 1 || (size_t)(n1 + n2) != value->len ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, VAULT_TAG_LEN, e->tag) != 1)
		goto out;
	free(e->ct);
	e->ct = TAKE_PTR(ct);
	e->len = (uint32_t)value->len;
	r = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	free(ct);
	buf_free(&ad);
	return r;
}

/* "entry 2 \"github\"", with anything outside the name alphabet shown as
 * '?': a corrupted name must not put control bytes on a terminal. */
static void entry_where(size_t i, const char *name, char *out, size_t outlen)
{
	char safe[VAULT_NAME_MAX + 1];
	size_t k = 0;
	for (; name && name[k] && k < VAULT_NAME_MAX; k++) {
		char one[2] = { name[k], 0 };
		safe[k] = name_valid(one, 1, 1) ? name[k] : '?';
	}
	safe[k] = '\0';
	if (name)
		snprintf(out, outlen, "entry %zu \"%s\"", i + 1, safe);
	else
		snprintf(out, outlen, "entry %zu", i + 1);
}

int vault_entry_open(const struct vault_file *v, size_t i, const struct secret *keys, struct secret **ret, char *errbuf,
                     size_t errlen)
{
	const struct vault_entry *e = &v->entries[i];
	_cleanup_secret_ struct secret *s = NULL;
	struct buf ad;
	buf_init(&ad, 2 + 1 + VAULT_NAME_MAX + 16);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n1 = 0, n2 = 0;
	int r = -ENOMEM;

	if (!ctx || entry_ad(e, &ad) < 0 || secret_alloc(e->len, &s) < 0)
		goto out;
	/* The tag is checked at Final; until then the output is not trusted,
	 * and on failure the secret holding it is wiped by its cleanup. */
	bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
	          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, VAULT_NONCE_LEN, NULL) == 1 &&
	          EVP_DecryptInit_ex(ctx, NULL, NULL, KEYS_ENC(keys), e->nonce) == 1 &&
	          EVP_DecryptUpdate(ctx, NULL, &n1, (const uint8_t *)ad.data, (int)ad.len) == 1 &&
	          EVP_DecryptUpdate(ctx, s->data, &n1, e->ct, (int)e->len) == 1 &&
	          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, VAULT_TAG_LEN, (void *)e->tag) == 1 &&
	          EVP_DecryptFinal_ex(ctx, s->data + n1, &n2) == 1 && (size_t)(n1 + n2) == e->len;
	if (!ok) {
		char where[VAULT_NAME_MAX + 32];
		entry_where(i, e->name, where, sizeof(where));
		snprintf(errbuf, errlen, "%s: cannot decrypt: wrong key or corrupted", where);
		r = -EBADMSG;
		goto out;
	}
	*ret = TAKE_PTR(s);
	r = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	buf_free(&ad);
	return r;
}

/* ---- parsing ---- */

static int bad(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

static int check_kdf(const struct vault_header *h, char *errbuf, size_t errlen)
{
	if (h->kdf == VAULT_KDF_KEYFILE) {
		/* One encoding per header: what is parsed serialises to the same bytes. */
		if (h->log2_n || h->r || h->p || !all_zero(h->salt, VAULT_SALT_LEN))
			return bad(errbuf, errlen, "header: key-file vault with scrypt parameters");
		return 0;
	}
	if (h->kdf != VAULT_KDF_SCRYPT)
		return bad(errbuf, errlen, "header: unknown key derivation %u", (unsigned)h->kdf);
	if (h->log2_n < VAULT_SCRYPT_LOG2N_MIN || h->log2_n > VAULT_SCRYPT_LOG2N_MAX || h->r < 1 ||
	    h->r > VAULT_SCRYPT_R_MAX || h->p < 1 || h->p > VAULT_SCRYPT_P_MAX ||
	    (uint64_t)128 * h->r << h->log2_n > VAULT_SCRYPT_MAXMEM)
		return bad(errbuf, errlen, "header: scrypt parameters out of range (log2 N %u, r %u, p %u)",
		           (unsigned)h->log2_n, h->r, h->p);
	return 0;
}

int vault_header_parse(const void *data, size_t n, struct vault_header *ret, char *errbuf, size_t errlen)
{
	struct cursor c = { data, n, 0 };
	struct vault_header h = { 0 };
	const uint8_t *m;
	uint64_t version, kdf, log2_n, r, p, count;

	if (!cur_bytes(&c, sizeof(magic), &m))
		return bad(errbuf, errlen, "header: truncated (the file has %zu bytes)", n);
	if (memcmp(m, magic, sizeof(magic)) != 0)
		return bad(errbuf, errlen, "header: not a keyward vault (wrong magic bytes)");
	if (!cur_be(&c, 2, &version))
		return bad(errbuf, errlen, "header: truncated (the file has %zu bytes)", n);
	/* Checked before the checksum: another version may lay out its header
	 * differently. */
	if (version != VAULT_VERSION) {
		snprintf(errbuf, errlen, "header: vault format version %u is not supported (this keyward reads %d)",
		         (unsigned)version, VAULT_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (n < VAULT_HEADER_LEN)
		return bad(errbuf, errlen, "header: truncated (the file has %zu bytes, the header %d)", n,
		           VAULT_HEADER_LEN);
	uint8_t sum[32];
	if (sha256(data, VAULT_HEADER_LEN - 32, sum) < 0)
		return -EIO;
	if (CRYPTO_memcmp(sum, (const uint8_t *)data + VAULT_HEADER_LEN - 32, 32) != 0)
		return bad(errbuf, errlen, "header: checksum mismatch (the header is corrupted)");

	if (!cur_be(&c, 1, &kdf) || !cur_be(&c, 1, &log2_n) || !cur_be(&c, 4, &r) || !cur_be(&c, 4, &p) ||
	    !cur_copy(&c, h.salt, VAULT_SALT_LEN) || !cur_be(&c, 4, &count))
		return bad(errbuf, errlen, "header: truncated");
	h.kdf = (enum vault_kdf)kdf;
	h.log2_n = (uint8_t)log2_n;
	h.r = (uint32_t)r;
	h.p = (uint32_t)p;
	h.count = (uint32_t)count;
	int rc = check_kdf(&h, errbuf, errlen);
	if (rc < 0)
		return rc;
	if (h.count > VAULT_MAX_ENTRIES)
		return bad(errbuf, errlen, "header: %u entries, more than the %d allowed", h.count, VAULT_MAX_ENTRIES);
	*ret = h;
	return 0;
}

/* One entry at the cursor, verified against the chain; on success *chain
 * becomes this entry's MAC. */
static int parse_entry(struct cursor *c, size_t i, const struct vault_file *v, const struct secret *keys,
                       uint8_t chain[VAULT_MAC_LEN], struct vault_entry *e, char *errbuf, size_t errlen)
{
	char where[VAULT_NAME_MAX + 32];
	size_t start = c->off;
	const uint8_t *name, *ct, *mac;
	uint64_t name_len, len;

	entry_where(i, NULL, where, sizeof(where));
	if (cur_left(c) == 0)
		return bad(errbuf, errlen, "%s of %u is missing: the file is truncated", where, v->hdr.count);
	if (!cur_be(c, 1, &name_len))
		return bad(errbuf, errlen, "%s: truncated", where);
	if (name_len < 1 || name_len > VAULT_NAME_MAX)
		return bad(errbuf, errlen, "%s: name length %u out of range", where, (unsigned)name_len);
	if (!cur_bytes(c, name_len, &name))
		return bad(errbuf, errlen, "%s: truncated", where);
	memcpy(e->name, name, name_len);
	e->name[name_len] = '\0';
	entry_where(i, e->name, where, sizeof(where));
	if (!cur_be(c, 8, &e->created) || !cur_be(c, 8, &e->rotated) || !cur_copy(c, e->nonce, VAULT_NONCE_LEN) ||
	    !cur_be(c, 4, &len))
		return bad(errbuf, errlen, "%s: truncated", where);
	if (len < 1 || len > SECRET_MAX)
		return bad(errbuf, errlen, "%s: value length %u out of range", where, (unsigned)len);
	if (!cur_bytes(c, len, &ct) || !cur_copy(c, e->tag, VAULT_TAG_LEN))
		return bad(errbuf, errlen, "%s: truncated", where);
	size_t end = c->off;
	if (!cur_bytes(c, VAULT_MAC_LEN, &mac))
		return bad(errbuf, errlen, "%s: truncated", where);

	uint8_t want[VAULT_MAC_LEN];
	int r = hmac2(keys, chain, VAULT_MAC_LEN, c->p + start, end - start, want);
	if (r < 0)
		return r;
	/* The first entry is where a wrong key shows; a later one fails only
	 * if it, or the order or set of entries before it, was changed. */
	if (CRYPTO_memcmp(want, mac, VAULT_MAC_LEN) != 0)
		return bad(errbuf, errlen, "%s: cannot decrypt: wrong key or corrupted%s", where,
		           i ? " (or an entry before it was removed or reordered)" : "");
	/* Verified: from here on a failure means a writer bug, not damage. */
	/* A NUL would end the name early: strlen(name) must be name_len. */
	if (strlen(e->name) != name_len || !vault_name_valid(e->name))
		return bad(errbuf, errlen, "%s: invalid name", where);
	if (i > 0 && strcmp(v->entries[i - 1].name, e->name) >= 0)
		return bad(errbuf, errlen, "%s: out of order or duplicate", where);
	e->ct = malloc(len);
	if (!e->ct)
		return -ENOMEM;
	memcpy(e->ct, ct, len);
	e->len = (uint32_t)len;
	memcpy(chain, mac, VAULT_MAC_LEN);
	return 0;
}

int vault_file_new(const struct vault_header *hdr, struct vault_file **ret)
{
	struct vault_file *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->hdr = *hdr;
	v->hdr.count = 0;
	*ret = v;
	return 0;
}

int vault_file_parse(const void *data, size_t n, const struct secret *keys, struct vault_file **ret, char *errbuf,
                     size_t errlen)
{
	_cleanup_(vault_file_freep) struct vault_file *v = NULL;
	struct vault_header h;
	uint8_t chain[VAULT_MAC_LEN], want[VAULT_MAC_LEN];
	const uint8_t *trailer;

	int r = vault_header_parse(data, n, &h, errbuf, errlen);
	if (r < 0)
		return r;
	r = vault_file_new(&h, &v);
	if (r < 0)
		return r;
	v->hdr.count = h.count;
	if (h.count) {
		v->entries = calloc(h.count, sizeof(*v->entries));
		if (!v->entries)
			return -ENOMEM;
	}
	/* The chain starts from the header, so the count, the key derivation
	 * and the salt are authenticated by every entry's MAC. */
	r = hmac2(keys, "", 0, data, VAULT_HEADER_LEN, chain);
	if (r < 0)
		return r;
	struct cursor c = { data, n, VAULT_HEADER_LEN };
	for (size_t i = 0; i < h.count; i++) {
		r = parse_entry(&c, i, v, keys, chain, &v->entries[i], errbuf, errlen);
		if (r < 0)
			return r;
		v->n++;
	}
	if (!cur_bytes(&c, VAULT_MAC_LEN, &trailer))
		return bad(errbuf, errlen, "trailer: truncated (after %u entr%s)", h.count, h.count == 1 ? "y" : "ies");
	if (cur_left(&c))
		return bad(errbuf, errlen, "trailer: %zu unexpected bytes after it", cur_left(&c));
	r = hmac2(keys, chain, VAULT_MAC_LEN, trailer_label, strlen(trailer_label), want);
	if (r < 0)
		return r;
	if (CRYPTO_memcmp(want, trailer, VAULT_MAC_LEN) != 0)
		return bad(errbuf, errlen, "trailer: cannot decrypt: wrong key or corrupted");
	*ret = TAKE_PTR(v);
	return 0;
}

/* ---- writing ---- */

static int put_header(const struct vault_file *v, struct buf *out)
{
	struct writer w = { out, 0 };
	const struct vault_header *h = &v->hdr;
	size_t start = out->len;
	uint8_t sum[32];

	put_bytes(&w, magic, sizeof(magic));
	put_be(&w, VAULT_VERSION, 2);
	put_be(&w, h->kdf, 1);
	put_be(&w, h->log2_n, 1);
	put_be(&w, h->r, 4);
	put_be(&w, h->p, 4);
	put_bytes(&w, h->salt, VAULT_SALT_LEN);
	put_be(&w, v->n, 4);
	if (w.r == 0)
		w.r = sha256(out->data + start, out->len - start, sum);
	put_bytes(&w, sum, sizeof(sum));
	return w.r;
}

static int put_entry(const struct vault_entry *e, const struct secret *keys, uint8_t chain[VAULT_MAC_LEN],
                     struct buf *out)
{
	struct writer w = { out, 0 };
	size_t start = out->len;
	size_t nl = strlen(e->name);

	put_be(&w, nl, 1);
	put_bytes(&w, e->name, nl);
	put_be(&w, e->created, 8);
	put_be(&w, e->rotated, 8);
	put_bytes(&w, e->nonce, VAULT_NONCE_LEN);
	put_be(&w, e->len, 4);
	put_bytes(&w, e->ct, e->len);
	put_bytes(&w, e->tag, VAULT_TAG_LEN);
	if (w.r == 0)
		w.r = hmac2(keys, chain, VAULT_MAC_LEN, out->data + start, out->len - start, chain);
	put_bytes(&w, chain, VAULT_MAC_LEN);
	return w.r;
}

int vault_file_serialize(const struct vault_file *v, const struct secret *keys, struct buf *out)
{
	uint8_t chain[VAULT_MAC_LEN];
	size_t start = out->len;
	int r = put_header(v, out);
	if (r == 0)
		r = hmac2(keys, "", 0, out->data + start, VAULT_HEADER_LEN, chain);
	for (size_t i = 0; r == 0 && i < v->n; i++)
		r = put_entry(&v->entries[i], keys, chain, out);
	if (r == 0)
		r = hmac2(keys, chain, VAULT_MAC_LEN, trailer_label, strlen(trailer_label), chain);
	if (r == 0)
		r = buf_append(out, chain, VAULT_MAC_LEN);
	return r;
}

/* ---- editing ---- */

int vault_file_find(const struct vault_file *v, const char *name)
{
	for (size_t i = 0; i < v->n; i++)
		if (streq(v->entries[i].name, name))
			return (int)i;
	return -ENOENT;
}

int vault_file_put(struct vault_file *v, const char *name, const struct secret *value, uint64_t now,
                   const struct secret *keys)
{
	if (!vault_name_valid(name) || value->len < 1 || value->len > SECRET_MAX)
		return -EINVAL;
	int i = vault_file_find(v, name);
	if (i >= 0) {
		struct vault_entry *e = &v->entries[i];
		uint64_t was = e->rotated;
		e->rotated = now;
		int r = seal(e, value, keys);
		if (r < 0)
			e->rotated = was;
		return r;
	}
	if (v->n >= VAULT_MAX_ENTRIES)
		return -ENOSPC;

	struct vault_entry e = { .created = now };
	memcpy(e.name, name, strlen(name) + 1);
	int r = seal(&e, value, keys);
	if (r < 0)
		return r;
	struct vault_entry *grown = realloc(v->entries, (v->n + 1) * sizeof(*grown));
	if (!grown) {
		free(e.ct);
		return -ENOMEM;
	}
	v->entries = grown;
	size_t at = 0;
	while (at < v->n && strcmp(v->entries[at].name, name) < 0)
		at++;
	memmove(&v->entries[at + 1], &v->entries[at], (v->n - at) * sizeof(*grown));
	v->entries[at] = e;
	v->n++;
	v->hdr.count = (uint32_t)v->n;
	return 0;
}

int vault_file_remove(struct vault_file *v, const char *name)
{
	int i = vault_file_find(v, name);
	if (i < 0)
		return i;
	free(v->entries[i].ct);
	memmove(&v->entries[i], &v->entries[i + 1], (v->n - (size_t)i - 1) * sizeof(*v->entries));
	v->n--;
	v->hdr.count = (uint32_t)v->n;
	return 0;
}

void vault_file_free(struct vault_file *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++)
		free(v->entries[i].ct);
	free(v->entries);
	free(v);
}
