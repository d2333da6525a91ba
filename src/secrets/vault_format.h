/* The vault file format (docs/vault.md has the byte layout and the reasons
 * for it). Pure functions over bytes and keys: no file, no lock, no clock;
 * vault.c does the I/O and finds the master key.
 *
 * Trust: the bytes come from a file that someone else may have written to
 * (a restored backup, a bad disk, a local attacker with write access). Every
 * length is bounded before it is used, through a bounded cursor. Nothing is
 * believed before it is verified: the header by its SHA-256, each entry by
 * an HMAC chained to the header and to every entry before it, the whole
 * file (entry count, order, end) by the trailer's HMAC. A value is only
 * ever decrypted (AES-256-GCM) from a file that passed all of these. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/secret.h"
#include "common/util.h"

#define VAULT_VERSION     1
#define VAULT_KEY_LEN     32 /* the master key: vault.key, or scrypt's output */
#define VAULT_NAME_MAX    128
#define VAULT_MAX_ENTRIES 1024
#define VAULT_FILE_MAX    (16u * 1024 * 1024)
#define VAULT_HEADER_LEN  72
#define VAULT_SALT_LEN    16
#define VAULT_NONCE_LEN   12
#define VAULT_TAG_LEN     16
#define VAULT_MAC_LEN     32

/* scrypt parameters a header may ask for: enough for any sane setting,
 * small enough that a crafted header cannot make keyward allocate more
 * than 256 MiB or spin for minutes. */
#define VAULT_SCRYPT_LOG2N_MIN 10
#define VAULT_SCRYPT_LOG2N_MAX 20
#define VAULT_SCRYPT_R_MAX     32
#define VAULT_SCRYPT_P_MAX     16
#define VAULT_SCRYPT_MAXMEM    (256u * 1024 * 1024)

enum vault_kdf {
	VAULT_KDF_KEYFILE = 0, /* master key: the 32 bytes of vault.key */
	VAULT_KDF_SCRYPT = 1,  /* master key: scrypt(passphrase, salt, N, r, p) */
};

struct vault_header {
	enum vault_kdf kdf;
	uint8_t log2_n; /* scrypt: N = 2^log2_n; all scrypt fields 0 for a key file */
	uint32_t r, p;
	uint8_t salt[VAULT_SALT_LEN];
	uint32_t count; /* entries that follow */
};

struct vault_entry {
	char name[VAULT_NAME_MAX + 1];
	uint64_t created; /* Unix seconds of the first set */
	uint64_t rotated; /* Unix seconds of the last set that replaced the value; 0: never */
	uint8_t nonce[VAULT_NONCE_LEN];
	uint8_t *ct; /* owned: len bytes of ciphertext */
	uint32_t len;
	uint8_t tag[VAULT_TAG_LEN];
};

/* A verified vault in memory: values still sealed. */
struct vault_file {
	struct vault_header hdr;
	struct vault_entry *entries; /* n, sorted by name (strcmp), names unique */
	size_t n;
};

/* NAME of vault:NAME and `keyward secret set NAME`: 1 to VAULT_NAME_MAX of
 * A-Z a-z 0-9 _ . - */
bool vault_name_valid(const char *name);

/* Derives the two working keys (AES-256-GCM, HMAC-SHA256) from a master
 * key of VAULT_KEY_LEN bytes with HKDF-SHA256. Returns 0 and *ret (a secret
 * the caller frees), or a negative errno. */
int vault_keys_derive(const struct secret *master, struct secret **ret) WUR;

/* Reads and checks the header only (magic, version, checksum, ranges), so
 * that the caller learns how to get the master key. Returns 0 and *ret, or
 * -EBADMSG (-EPROTONOSUPPORT for another version) with a message that
 * starts with "header: ". */
int vault_header_parse(const void *data, size_t n, struct vault_header *ret, char *errbuf, size_t errlen) WUR;

/* An empty vault with hdr's key parameters. Returns 0 and *ret, or -ENOMEM. */
int vault_file_new(const struct vault_header *hdr, struct vault_file **ret) WUR;

/* Parses and verifies a whole vault file with keys (vault_keys_derive).
 * Returns 0 and *ret (free with vault_file_free), or -EBADMSG and a message
 * naming where the file went wrong: "header: ...", "entry 2 \"github\": ..."
 * or "trailer: ...". Decrypts nothing. */
int vault_file_parse(const void *data, size_t n, const struct secret *keys, struct vault_file **ret, char *errbuf,
                     size_t errlen) WUR;

/* The file's bytes for v, sealed with keys, appended to out (whose ceiling
 * should be VAULT_FILE_MAX). Returns 0, -ENOBUFS past out's ceiling,
 * -ENOMEM or -EIO (a crypto failure). */
int vault_file_serialize(const struct vault_file *v, const struct secret *keys, struct buf *out) WUR;

/* Index of the entry called name, or -ENOENT. */
int vault_file_find(const struct vault_file *v, const char *name) WUR;

/* Seals value under name with a fresh nonce: a new entry created at now,
 * or a rotation of an existing one (created kept, rotated = now). The value
 * is not checked here (secret_value_check). Returns 0, -EINVAL for a bad
 * name, -ENOSPC when the vault has VAULT_MAX_ENTRIES, -ENOMEM or -EIO. */
int vault_file_put(struct vault_file *v, const char *name, const struct secret *value, uint64_t now,
                   const struct secret *keys) WUR;

/* Removes the entry called name. Returns 0 or -ENOENT. */
int vault_file_remove(struct vault_file *v, const char *name) WUR;

/* Decrypts entry i into a new secret (*ret, the caller frees it); no other
 * copy of the plaintext is left behind. Returns 0, or -EBADMSG with
 * "entry N \"NAME\": cannot decrypt: wrong key or corrupted", or -ENOMEM. */
int vault_entry_open(const struct vault_file *v, size_t i, const struct secret *keys, struct secret **ret, char *errbuf,
                     size_t errlen) WUR;

/* NULL is a no-op. */
void vault_file_free(struct vault_file *v);

static inline void vault_file_freep(struct vault_file **v)
{
	vault_file_free(*v);
}
