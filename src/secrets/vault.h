/* keyward's encrypted vault: the file `vault` in the state directory
 * (common/state.h), sealed under a master key that is either the key file
 * `vault.key` next to it or a passphrase read from the file named by
 * $KEYWARD_PASSPHRASE_FILE (docs/vault.md).
 *
 * Readers open, verify the whole file and decrypt only the entry they ask
 * for. Writers take an exclusive flock on `vault.lock`, read, modify and
 * replace the file atomically (temporary file, fsync, rename, fsync of the
 * directory), so concurrent writers all land and a crash leaves either the
 * old vault or the new one. Messages name the file and the entry, never a
 * value. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "common/secret.h"
#include "common/util.h"
#include "secrets/vault_format.h"

/* Names the environment variable that points at a passphrase file. */
#define VAULT_PASSPHRASE_ENV "KEYWARD_PASSPHRASE_FILE"
/* Longest passphrase read from that file. */
#define VAULT_PASSPHRASE_MAX 1024

struct vault_info {
	char name[VAULT_NAME_MAX + 1];
	uint64_t created; /* Unix seconds */
	uint64_t rotated; /* Unix seconds of the last rotation; 0: never rotated */
};

/* Decrypts the secret called name into *ret (the caller frees it). Returns
 * 0, -ENOENT (no vault, or no such secret), or another negative errno with
 * a message in errbuf ("PATH: entry 2 \"x\": cannot decrypt: wrong key or
 * corrupted"). */
int vault_get(const char *name, struct secret **ret, char *errbuf, size_t errlen) WUR;

/* Stores value under name, creating the vault (and key file) on first use;
 * an existing name is rotated (its creation time kept). The value must
 * pass secret_value_check. Returns 0 or a negative errno with a message. */
int vault_set(const char *name, const struct secret *value, char *errbuf, size_t errlen) WUR;

/* Removes the secret called name. Returns 0, -ENOENT if there is none, or
 * another negative errno with a message. */
int vault_remove(const char *name, char *errbuf, size_t errlen) WUR;

/* Names and times of every secret, sorted by name, after verifying the
 * whole file (no value is decrypted). *ret is an array of *ret_n entries
 * the caller frees (NULL when there are none; a missing vault is empty).
 * Returns 0 or a negative errno with a message. */
int vault_list(struct vault_info **ret, size_t *ret_n, char *errbuf, size_t errlen) WUR;

/* The path of the vault file (for messages), from the state directory. */
int vault_path(char *out, size_t outlen, char *errbuf, size_t errlen) WUR;

/* For a process that reads the vault for long (the proxy re-reads it on
 * every change): opens the state directory and the folder of the
 * passphrase file once, for the life of the process, and every later read
 * of the vault, its key file and the passphrase file opens their last name
 * in those folders, never their path again. A folder on the way renamed or
 * replaced by a link afterwards (by the sandbox, when they lie in its
 * workspace) cannot point keyward at another vault or key; `keyward secret
 * set`, which renames a new vault over the old one, is seen. A folder that
 * is missing now stays missing for this process (no vault, or no
 * passphrase: the reads say so). Must be called before the sandbox's CMD
 * starts, before any other thread reads the vault; a second call does
 * nothing. */
void vault_pin(void);

/* stat(2) of the vault file (through the pinned state directory once
 * vault_pin was called), for rotation. Returns 0 or a negative errno. */
int vault_stat(struct stat *ret) WUR;
