/* The vault file parser (src/secrets/vault_format.h): vault_header_parse,
 * vault_file_parse, and on what they accept vault_entry_open,
 * vault_file_serialize, vault_file_put and vault_file_remove. The master
 * key is fixed (bytes 0, 1, ..., 31), whatever the header's key derivation
 * says: the parser is what is under test, not scrypt.
 *
 * A fuzzer cannot forge SHA-256 or HMAC, so on its own it would never get
 * past the header's checksum. Each input is therefore run twice: as it is,
 * and "resealed": the harness recomputes the header checksum, each entry's
 * MAC and the trailer wherever the layout (docs/vault.md) lets it find
 * them, so that the checks behind the MACs (names, order, decryption, bytes
 * after the trailer) are reached too.
 *
 * Properties: a verdict is 0, -EBADMSG or -EPROTONOSUPPORT, never a crash;
 * a refusal names "header: ", "entry N" or "trailer: "; the header parser
 * and the file parser agree on the header; an accepted file has count
 * entries with valid, strictly increasing names, serialises back to exactly
 * the same bytes, and every entry decrypts or fails with a message; adding
 * and removing a secret gives a file that parses again, with that secret's
 * value and nothing else changed. */
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

#include "fuzz.h"
#include "secrets/vault_format.h"

static struct secret *keys;

static void setup(void)
{
	if (keys)
		return;
	uint8_t master[VAULT_KEY_LEN];
	for (int i = 0; i < VAULT_KEY_LEN; i++)
		master[i] = (uint8_t)i;
	struct secret *m;
	if (secret_new(master, sizeof(master), &m) < 0 || vault_keys_derive(m, &keys) < 0)
		abort();
	secret_free(m);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void hmac(const uint8_t *a, size_t an, const void *b, size_t bn, uint8_t out[32])
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		                OSSL_PARAM_construct_end() };
	size_t len = 0;
	if (!ctx || EVP_MAC_init(ctx, keys->data + 32, 32, params) != 1 || EVP_MAC_update(ctx, a, an) != 1 ||
	    EVP_MAC_update(ctx, b, bn) != 1 || EVP_MAC_final(ctx, out, &len, 32) != 1)
		abort();
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
}

/* Recomputes, in place, every checksum and MAC the layout lets us find. */
static void reseal(uint8_t *p, size_t n)
{
	static const char label[] = "keyward vault v1 end";
	uint8_t chain[32];
	unsigned int len = 0;
	if (n < VAULT_HEADER_LEN)
		return;
	if (EVP_Digest(p, VAULT_HEADER_LEN - 32, p + VAULT_HEADER_LEN - 32, &len, EVP_sha256(), NULL) != 1)
		abort();
	hmac((const uint8_t *)"", 0, p, VAULT_HEADER_LEN, chain);
	size_t off = VAULT_HEADER_LEN;
	uint32_t count = be32(p + 36);
	for (uint32_t i = 0; i < count && i < VAULT_MAX_ENTRIES; i++) {
		size_t fixed = 1 + 8 + 8 + VAULT_NONCE_LEN + 4;
		if (n - off < 1 || n - off < fixed + p[off])
			return;
		size_t vlen = be32(p + off + fixed + p[off] - 4);
		size_t body = fixed + p[off] + VAULT_TAG_LEN;
		if (vlen > n || n - off < body + vlen + 32)
			return;
		hmac(chain, 32, p + off, body + vlen, chain);
		memcpy(p + off + body + vlen, chain, 32);
		off += body + vlen + 32;
	}
	if (n - off >= 32)
		hmac(chain, 32, label, strlen(label), p + off);
}

static bool names_a_part(const char *msg)
{
	return strncmp(msg, "header: ", 8) == 0 || strncmp(msg, "entry ", 6) == 0 || strncmp(msg, "trailer: ", 9) == 0;
}

/* Adding a secret and removing it again round-trips through the format. */
static void check_edit(const struct vault_file *v)
{
	static const char value[] = "fuzz-value";
	struct secret *s;
	struct buf out;
	struct vault_file *w = NULL;
	char err[512];

	if (secret_new(value, sizeof(value) - 1, &s) < 0)
		abort();
	/* a copy of v by way of its bytes */
	buf_init(&out, VAULT_FILE_MAX);
	fuzz_assert(vault_file_serialize(v, keys, &out) == 0);
	fuzz_assert(vault_file_parse(out.data, out.len, keys, &w, err, sizeof(err)) == 0);
	buf_free(&out);

	size_t had = vault_file_find(v, "zz-fuzz") >= 0;
	int put = vault_file_put(w, "zz-fuzz", s, 1700000000, keys);
	fuzz_assert(put == 0 || (put == -ENOSPC && v->n == VAULT_MAX_ENTRIES && !had));
	if (put == 0) {
		buf_init(&out, VAULT_FILE_MAX);
		int r = vault_file_serialize(w, keys, &out);
		fuzz_assert(r == 0 || r == -ENOBUFS);
		vault_file_free(w);
		w = NULL;
		if (r == 0) {
			fuzz_assert(vault_file_parse(out.data, out.len, keys, &w, err, sizeof(err)) == 0);
			fuzz_assert(w->n == v->n + 1 - had);
			int i = vault_file_find(w, "zz-fuzz");
			fuzz_assert(i >= 0);
			struct secret *got;
			fuzz_assert(vault_entry_open(w, (size_t)i, keys, &got, err, sizeof(err)) == 0);
			fuzz_assert(got->len == s->len && memcmp(got->data, s->data, s->len) == 0);
			secret_free(got);
			fuzz_assert(vault_file_remove(w, "zz-fuzz") == 0);
			fuzz_assert(vault_file_remove(w, "zz-fuzz") == -ENOENT);
			fuzz_assert(w->n == v->n - had);
		}
		buf_free(&out);
	}
	vault_file_free(w);
	secret_free(s);
}

static void check(const uint8_t *data, size_t size)
{
	struct vault_header h;
	struct vault_file *v = NULL;
	char herr[512] = "", err[512] = "";

	int hr = vault_header_parse(data, size, &h, herr, sizeof(herr));
	fuzz_assert(hr == 0 || hr == -EBADMSG || hr == -EPROTONOSUPPORT);
	if (hr < 0)
		fuzz_assert(strncmp(herr, "header: ", 8) == 0);

	int r = vault_file_parse(data, size, keys, &v, err, sizeof(err));
	fuzz_assert(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT);
	if (hr < 0)
		fuzz_assert(r == hr && strcmp(err, herr) == 0);
	if (r < 0) {
		fuzz_assert(v == NULL && names_a_part(err));
		return;
	}

	fuzz_assert(v->n == h.count && v->hdr.count == h.count && v->hdr.kdf == h.kdf);
	for (size_t i = 0; i < v->n; i++) {
		fuzz_assert(vault_name_valid(v->entries[i].name));
		fuzz_assert(i == 0 || strcmp(v->entries[i - 1].name, v->entries[i].name) < 0);
		fuzz_assert(vault_file_find(v, v->entries[i].name) == (int)i);
		fuzz_assert(v->entries[i].len >= 1 && v->entries[i].len <= SECRET_MAX);
		struct secret *s = NULL;
		int o = vault_entry_open(v, i, keys, &s, err, sizeof(err));
		fuzz_assert(o == 0 || (o == -EBADMSG && s == NULL && strncmp(err, "entry ", 6) == 0));
		if (o == 0)
			fuzz_assert(s->len == v->entries[i].len);
		secret_free(s);
	}

	struct buf out;
	buf_init(&out, VAULT_FILE_MAX);
	fuzz_assert(vault_file_serialize(v, keys, &out) == 0);
	fuzz_assert(out.len == size && memcmp(out.data, data, size) == 0);
	buf_free(&out);

	check_edit(v);
	vault_file_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	if (size > VAULT_FILE_MAX)
		return 0;
	char *exact = fuzz_dup_exact(data, size);
	check((const uint8_t *)exact, size);
	reseal((uint8_t *)exact, size);
	check((const uint8_t *)exact, size);
	free(exact);
	return 0;
}
